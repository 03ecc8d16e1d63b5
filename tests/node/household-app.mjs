// The household web app at `/`, driven in headless Chromium the way a family uses it: by
// roles and labels. Browser contexts are separate people/devices:
//   A — the app of a new user, B — /sim paired as the camera A registered,
//   C — the app of a second user, who must see none of A's things.
// Steps: sign up, wrong password, register a camera (token + QR shown once), pair /sim with
// the token, tile online, live video, motion → notification + timeline entry without
// reload, the motion clip plays from the timeline, recordings, a second camera (two live
// views at once) and a viewer, links, rename, delete, infinite scroll, a stream the camera
// ends, a network outage (the server restarts; the live view reconnects by itself),
// disabling stops the live view, a camera offline and a refused stream shown plainly, the
// phone width, and the second user's isolation (page and API).
//
// Usage: node household-app.mjs <baseURL> <screenshotDir>
// Outage handshake with the test that runs it: prints "OUTAGE" on stdout, waits for a
// line on stdin (the server is back), then goes on. Prints "TIMINGS {json}" at the end.
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { launchChromium } from "./chromium.mjs";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node household-app.mjs <baseURL> <screenshotDir>");
  process.exit(2);
}
const STEP = 15_000;
const timings = {};
const pages = {};
let browser;

const overall = setTimeout(() => fail("overall timeout of 170 s exceeded"), 170_000);

async function fail(message) {
  console.error("FAIL: " + message);
  for (const [label, page] of Object.entries(pages)) {
    const text = await Promise.race([
      page.evaluate(() => document.body.innerText.slice(0, 1500)).catch((e) => `(${e.message})`),
      new Promise((r) => setTimeout(() => r("(timed out)"), 2_000)),
    ]);
    console.error(`--- ${label} shows:\n${text}`);
  }
  if (pages.A) {
    const api = await Promise.race([
      pages.A.evaluate(async () => {
        const get = async (p) => (await fetch(p, { headers: { accept: "application/json" } })).text();
        const metrics = (await get("/metrics")).split("\n").filter((l) => /keyframe|record|segment/.test(l) && !l.startsWith("#"));
        return { events: await get("/events?limit=3"), recordings: await get("/recordings?limit=3"), metrics };
      }).catch((e) => e.message),
      new Promise((r) => setTimeout(() => r("(timed out)"), 2_000)),
    ]);
    console.error(`--- A's API view: ${JSON.stringify(api).slice(0, 3000)}`);
  }
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 3_000))]);
  process.exit(1);
}

async function step(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ": " + detail : ""}`);
  } catch (e) {
    // Playwright's call log (what the action waited for) follows the first line.
    await fail(`${name}: ${e.message.slice(0, 1500)}`);
  }
}

async function open(label, path, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${label}] page error: ${e.message}`));
  page.on("console", (m) => {
    // Resource errors during the outage are expected; anything else is reported.
    if (m.type() === "error" && !/Failed to load resource|ERR_CONNECTION_REFUSED|WebSocket/.test(m.text())) {
      console.error(`[${label}] console: ${m.text()}`);
    }
  });
  page.on("dialog", (d) => d.accept());
  pages[label] = page;
  const res = await page.goto(base + path);
  if (!res || !res.ok()) throw new Error(`GET ${path} answered ${res && res.status()}`);
  return page;
}

const liveVideoPlays = (page, camera) =>
  page.waitForFunction((label) => {
    const v = document.querySelector(`video[aria-label="${label}"]`);
    return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
  }, `Live video from ${camera}`, { timeout: STEP, polling: 50 });

const liveState = (page, camera) =>
  page.getByRole("region", { name: `Live: ${camera}` }).locator(".live-state");

async function expectText(locator, pattern, what, timeout = STEP) {
  const deadline = Date.now() + timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = ((await locator.first().textContent({ timeout: 1_000 }).catch(() => "")) || "").trim();
    if (pattern.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: expected ${pattern}, saw ${JSON.stringify(text)}`);
}

async function nav(page, name) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name }).click();
  await page.getByRole("heading", { name: name === "Timeline" ? "Motion timeline" : name }).waitFor({ timeout: STEP });
}

async function signUp(page, name, email, password) {
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor({ timeout: STEP });
}

// Lines from the test, kept until asked for (the answer may come before the question).
const stdinQueue = [];
let stdinWaiter = null;
createInterface({ input: process.stdin }).on("line", (line) => {
  if (stdinWaiter) { const w = stdinWaiter; stdinWaiter = null; w(line); } else stdinQueue.push(line);
});
const nextStdinLine = () =>
  stdinQueue.length ? Promise.resolve(stdinQueue.shift()) : new Promise((resolve) => { stdinWaiter = resolve; });

const tag = `${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
const alice = { name: "Alice", email: `alice-${tag}@example.com`, password: "correct-horse-1" };
const bob = { name: "Bob", email: `bob-${tag}@example.com`, password: "battery-staple-2" };
const CAMERA = "Front door";
const CAMERA2 = "Back yard";
const RENAMED = "Garden";
const VIEWER = "Phone";
let app, sim, garden, other, token, token2, cameraId;

try {
  browser = await launchChromium({ extraArgs: ["--autoplay-policy=no-user-gesture-required"] });
} catch (e) {
  await fail("could not launch Chromium: " + e.message);
}

await step("A: a signed-out visitor sees only the sign-in screen", async () => {
  app = await open("A", "/");
  await app.getByRole("button", { name: "Sign in" }).waitFor({ timeout: STEP });
  if (await app.getByRole("navigation", { name: "Main" }).count()) throw new Error("navigation shown while signed out");
  // Google sign-in is not configured on this server: no button for it.
  if (await app.getByRole("button", { name: "Continue with Google" }).count()) throw new Error("a Google button without Google sign-in");
  await app.screenshot({ path: `${shots}/sign-in.png` });
});

await step("A: sign up, sign out, a wrong password is shown plainly, sign in", async () => {
  await signUp(app, alice.name, alice.email, alice.password);
  await app.getByRole("button", { name: "Sign out" }).click();
  await app.getByLabel("Email").fill(alice.email);
  await app.getByLabel("Password").fill("not-the-password");
  await app.getByRole("button", { name: "Sign in" }).click();
  const alert = await expectText(app.getByRole("alert"), /invalid email or password/i, "wrong password");
  await app.getByLabel("Password").fill(alice.password);
  // By keyboard: Enter in the password field signs in.
  await app.getByLabel("Password").press("Enter");
  await app.getByRole("navigation", { name: "Main" }).waitFor({ timeout: STEP });
  return alert;
});

await step("A: the app is keyboard-navigable (Tab reaches the views, Enter opens one)", async () => {
  await app.locator("body").focus();
  let reached = "";
  for (let i = 0; i < 15 && reached !== "Timeline"; i += 1) {
    await app.keyboard.press("Tab");
    reached = await app.evaluate(() => document.activeElement?.textContent?.trim() ?? "");
  }
  if (reached !== "Timeline") throw new Error("Tab never reached the Timeline link");
  const visibleFocus = await app.evaluate(() => getComputedStyle(document.activeElement).outlineStyle !== "none"
    || getComputedStyle(document.activeElement).boxShadow !== "none");
  if (!visibleFocus) throw new Error("the focused link shows no focus ring");
  await app.keyboard.press("Enter");
  await app.getByRole("heading", { name: "Motion timeline" }).waitFor({ timeout: STEP });
});

await step("A: register a camera; the token is shown once with a QR code", async () => {
  await nav(app, "Devices");
  const form = app.getByRole("form", { name: "Add a device" });
  await form.getByLabel("Device name").fill(CAMERA);
  await form.getByLabel("Kind").selectOption("camera");
  await form.getByRole("button", { name: "Register device" }).click();
  const pairing = app.getByRole("region", { name: "Pairing" });
  token = await pairing.getByLabel("Device token").inputValue({ timeout: STEP });
  if (!token.startsWith("wpd_")) throw new Error(`token ${JSON.stringify(token)}`);
  const qr = pairing.getByRole("img", { name: "Pairing QR code" });
  const src = await qr.getAttribute("src");
  if (!src || !src.startsWith("data:image/")) throw new Error(`QR image src ${src}`);
  const width = await qr.evaluate((img) => img.naturalWidth);
  if (width < 100) throw new Error(`QR image is ${width} px wide`);
  await app.screenshot({ path: `${shots}/devices-pairing.png` });
  await pairing.getByRole("button", { name: "Done" }).click();
  // The app saves the choice with a PATCH; wait for its answer before reading it back.
  const saved = app.waitForResponse((r) => r.request().method() === "PATCH" && r.url().includes("/devices/"), { timeout: STEP });
  await app.getByLabel(`Recording mode for ${CAMERA}`).selectOption("motion");
  const patch = await saved;
  if (!patch.ok()) throw new Error(`saving the recording mode answered ${patch.status()}`);
  const rows = app.getByRole("table", { name: "Your devices" }).getByRole("row").filter({ hasText: CAMERA });
  if ((await rows.count()) !== 1) throw new Error("the camera is not listed once");
  cameraId = await app.evaluate(async (name) => {
    const page = await (await fetch("/devices", { headers: { accept: "application/json" } })).json();
    const cam = page.items.find((d) => d.name === name);
    return cam.recordingMode === "motion" ? cam.id : `recordingMode=${cam.recordingMode}`;
  }, CAMERA);
  if (!cameraId || cameraId.startsWith("recordingMode")) throw new Error(`the recording mode did not stick: ${cameraId}`);
});

await step("A: the camera tile is offline before pairing", async () => {
  await nav(app, "Cameras");
  await expectText(app.getByRole("article", { name: CAMERA }).locator(".presence"), /^Offline$/, "tile");
});

await step("B: /sim pairs as that camera with the shown token; the tile turns online within 2 s", async () => {
  // Opened as the QR code's link: it fills in the token and names the device, and leaves
  // the address bar clean, but the tab becomes that camera only when its user says so.
  sim = await open("B", `/sim/mobile-sim.html#pair=${encodeURIComponent(token)}`);
  await expectText(sim.locator("#status"), new RegExp(`the camera \u201c${CAMERA}\u201d`), "pairing link");
  const prefilled = await sim.getByLabel("Pairing token (from the web app)").inputValue();
  if (prefilled !== token) throw new Error(`the link filled in ${JSON.stringify(prefilled)}`);
  if (sim.url().includes("pair=")) throw new Error(`the token stayed in the address bar: ${sim.url()}`);
  const early = await sim.textContent("#socketState");
  if (early === "connected") throw new Error("the link paired the tab without a click");
  await sim.getByRole("button", { name: "Pair with token" }).click();
  await sim.waitForFunction(() => document.getElementById("socketState").textContent === "connected", null, { timeout: STEP });
  const connectedAt = Date.now();
  await expectText(app.getByRole("article", { name: CAMERA }).locator(".presence"), /^Online$/, "tile", 10_000);
  timings.tileOnlineMs = Date.now() - connectedAt;
  if (timings.tileOnlineMs > 2_000) throw new Error(`the tile turned online after ${timings.tileOnlineMs} ms`);
  return `${timings.tileOnlineMs} ms`;
});

await step("A: opening the tile shows decoded live video within 1.5 s", async () => {
  // Three openings, each a new stream the camera starts: the best of them is held to the
  // target, so a moment of load on a shared CI machine does not decide it, while a slow
  // path still fails every time.
  const tries = [];
  for (let i = 0; i < 3; i += 1) {
    const clicked = Date.now();
    await app.getByRole("button", { name: `Watch ${CAMERA}` }).click();
    await liveVideoPlays(app, CAMERA);
    tries.push(Date.now() - clicked);
    await expectText(liveState(app, CAMERA), /^Live$/, "live state");
    if (i < 2) {
      await app.getByRole("button", { name: `Close live view of ${CAMERA}` }).click();
      await app.getByRole("region", { name: `Live: ${CAMERA}` }).waitFor({ state: "detached", timeout: STEP });
      // The camera hears the end and stops publishing before the next request.
      await sim.waitForFunction(() => /stopped|idle/.test(document.getElementById("publisherState").textContent), null, { timeout: STEP });
    }
  }
  timings.firstFrameMs = tries;
  const region = app.getByRole("region", { name: `Live: ${CAMERA}` });
  for (const name of ["Audio", "Full screen", `Close live view of ${CAMERA}`]) {
    await region.getByRole("button", { name }).waitFor({ timeout: STEP });
  }
  await app.screenshot({ path: `${shots}/cameras-live.png`, fullPage: true });
  const best = Math.min(...tries);
  if (best > 1_500) throw new Error(`first decoded frame after ${tries.join(", ")} ms`);
  return `${tries.join(", ")} ms`;
});

await step("B → A: motion shows a notification, updates the grid and the open timeline at once", async () => {
  // A second tab of the same session keeps the timeline open while this one shows the grid.
  const timelineTab = await app.context().newPage();
  await timelineTab.goto(base + "/#/timeline");
  const entries = timelineTab.getByRole("list", { name: "Motion events" }).getByRole("listitem");
  await timelineTab.getByText("No motion events yet.").waitFor({ timeout: STEP });
  const loaded = await Promise.all([app, timelineTab].map((p) => p.evaluate(() => performance.timeOrigin)));
  const tile = app.getByRole("article", { name: CAMERA });
  if (!/No motion yet/.test(await tile.textContent())) throw new Error("the tile already shows motion");

  await sim.getByRole("button", { name: "Motion start" }).click();
  await expectText(app.locator(".toasts"), new RegExp(`Motion on ${CAMERA}`), "notification", 5_000);
  await expectText(tile, /Last motion: /, "tile last motion", 5_000);
  await entries.filter({ hasText: CAMERA }).first().waitFor({ timeout: 5_000 });
  const now = await Promise.all([app, timelineTab].map((p) => p.evaluate(() => performance.timeOrigin)));
  if (JSON.stringify(now) !== JSON.stringify(loaded)) throw new Error("a page reloaded");
  await timelineTab.close();
  await nav(app, "Timeline");
});

await step("A: the clip recorded for the motion plays from the timeline", async () => {
  await new Promise((r) => setTimeout(r, 4_000));
  await sim.getByRole("button", { name: "Motion end" }).click({ timeout: 10_000 })
    .catch((e) => { throw new Error(`Motion end in /sim: ${e.message}`); });
  const play = app.getByRole("button", { name: new RegExp(`^Play clip of motion on ${CAMERA} at `) }).first();
  const deadline = Date.now() + 30_000;
  while (!(await play.count())) {
    if (Date.now() > deadline) throw new Error("no Play clip button within 30 s");
    // Going to another view and back re-reads the timeline (not a page reload).
    await new Promise((r) => setTimeout(r, 1_000));
    if (!(await play.count())) { await nav(app, "Cameras"); await nav(app, "Timeline"); }
  }
  await play.click({ timeout: 10_000 }).catch((e) => { throw new Error(`Play clip: ${e.message}`); });
  const played = await app.waitForFunction((label) => {
    const v = document.querySelector(`video[aria-label="${label}"]`);
    return v && v.currentTime > 1 ? v.currentTime : false;
  }, `Clip of motion on ${CAMERA}`, { timeout: 20_000, polling: 100 });
  await app.screenshot({ path: `${shots}/timeline.png`, fullPage: true });
  return `played to ${(await played.jsonValue()).toFixed(1)} s`;
});

await step("A: recordings by camera and day play, and offer downloads", async () => {
  await nav(app, "Recordings");
  const list = app.getByRole("list", { name: "Recordings" });
  const play = list.getByRole("button", { name: /^Play recording from / }).first();
  await play.waitFor({ timeout: STEP });
  await play.click();
  await app.waitForFunction(() => {
    const v = document.querySelector('video[aria-label="Recording player"]');
    return v && v.currentTime > 1;
  }, null, { timeout: 20_000, polling: 100 });
  await list.getByText("Download").first().click();
  const link = list.getByRole("link", { name: "Segment 1" }).first();
  await link.waitFor({ timeout: STEP });
  const href = await link.getAttribute("href");
  const status = await app.evaluate(async (url) => (await fetch(url)).status, href);
  if (status !== 200) throw new Error(`segment download answered ${status}`);
  await app.screenshot({ path: `${shots}/recordings.png`, fullPage: true });
  await nav(app, "Cameras");
  await liveVideoPlays(app, CAMERA);
});

await step("A: a second camera and a viewer: copy the token, link, unlink, rename, delete", async () => {
  await nav(app, "Devices");
  const form = app.getByRole("form", { name: "Add a device" });
  await form.getByLabel("Device name").fill(CAMERA2);
  await form.getByLabel("Kind").selectOption("camera");
  await form.getByRole("button", { name: "Register device" }).click();
  const pairing = app.getByRole("region", { name: "Pairing" });
  token2 = await pairing.getByLabel("Device token").inputValue({ timeout: STEP });
  await pairing.getByRole("button", { name: "Copy token" }).click();
  await pairing.getByText("Copied").waitFor({ timeout: STEP });
  const copied = await app.evaluate(() => navigator.clipboard.readText());
  if (copied !== token2) throw new Error("the clipboard does not hold the token");
  await pairing.getByRole("button", { name: "Done" }).click();
  await form.getByLabel("Device name").fill(VIEWER);
  await form.getByLabel("Kind").selectOption("client");
  await form.getByRole("button", { name: "Register device" }).click();
  await app.getByRole("region", { name: "Pairing" }).getByRole("button", { name: "Done" }).click();

  await app.getByLabel("Link camera").selectOption({ label: CAMERA });
  await app.getByLabel("Link viewer").selectOption({ label: VIEWER });
  await app.getByRole("button", { name: "Link", exact: true }).click();
  const links = app.getByRole("list", { name: "Links" });
  await links.getByRole("listitem").filter({ hasText: `${CAMERA} → ${VIEWER}` }).waitFor({ timeout: STEP });
  await links.getByRole("button", { name: `Unlink ${CAMERA} from ${VIEWER}` }).click();
  await links.getByRole("listitem").filter({ hasText: `${CAMERA} → ${VIEWER}` }).waitFor({ state: "detached", timeout: STEP });

  await app.getByRole("button", { name: `Rename ${CAMERA2}` }).click();
  await app.getByLabel(`New name for ${CAMERA2}`).fill(RENAMED);
  await app.getByRole("button", { name: "Save" }).click();
  await app.getByRole("button", { name: `Rename ${RENAMED}` }).waitFor({ timeout: STEP });
  await app.getByRole("button", { name: `Delete ${VIEWER}` }).click();
  await app.getByRole("button", { name: `Delete ${VIEWER}` }).waitFor({ state: "detached", timeout: STEP });

  const state = await app.evaluate(async () => {
    const get = async (p) => (await fetch(p, { headers: { accept: "application/json" } })).json();
    return { devices: (await get("/devices")).items.map((d) => d.name).sort(), links: (await get("/device-links")).items.length };
  });
  if (JSON.stringify(state) !== JSON.stringify({ devices: [CAMERA, RENAMED].sort(), links: 0 })) {
    throw new Error(`the server holds ${JSON.stringify(state)}`);
  }
});

await step("D → A: a second camera online; two live views play at once", async () => {
  garden = await open("D", "/sim/mobile-sim.html");
  await garden.getByLabel("Pairing token (from the web app)").fill(token2);
  await garden.getByRole("button", { name: "Pair with token" }).click();
  await nav(app, "Cameras");
  await expectText(app.getByRole("article", { name: RENAMED }).locator(".presence"), /^Online$/, "second tile");
  await app.getByRole("button", { name: `Watch ${RENAMED}` }).click();
  await liveVideoPlays(app, RENAMED);
  await liveVideoPlays(app, CAMERA);
  // Both are playing now, not one after the other: their frame counts both advance.
  const frames = () => app.evaluate((labels) => labels.map((l) =>
    document.querySelector(`video[aria-label="${l}"]`).getVideoPlaybackQuality().totalVideoFrames),
  [`Live video from ${CAMERA}`, `Live video from ${RENAMED}`]);
  const before = await frames();
  await new Promise((r) => setTimeout(r, 1_000));
  const after = await frames();
  if (!(after[0] > before[0] && after[1] > before[1])) throw new Error(`frames ${before} → ${after}`);
  return `frames ${before} → ${after}`;
});

await step("A: the timeline scrolls on through every event and filters by camera", async () => {
  // 30 short events from the second camera, sent as a camera sends them.
  await garden.evaluate(async (token) => {
    const headers = { authorization: "Bearer " + token, "content-type": "application/json", accept: "application/json" };
    for (let i = 0; i < 30; i += 1) {
      const r = await fetch("/events/motion/start", { method: "POST", headers, body: JSON.stringify({ score: 0.5 }) });
      const event = await r.json();
      await fetch(`/events/${event.id}/motion/end`, { method: "POST", headers });
    }
  }, token2);
  await nav(app, "Timeline");
  const items = app.getByRole("list", { name: "Motion events" }).getByRole("listitem");
  const deadline = Date.now() + STEP;
  while ((await items.count()) < 31) {
    if (Date.now() > deadline) throw new Error(`only ${await items.count()} of 31 events after scrolling`);
    await items.last().scrollIntoViewIfNeeded();
    await app.mouse.wheel(0, 2000);
    await new Promise((r) => setTimeout(r, 200));
  }
  const total = await items.count();
  await app.getByLabel("Camera").selectOption({ label: CAMERA });
  await expectText(items.first(), new RegExp(CAMERA), "filtered timeline");
  const filtered = await items.allTextContents();
  if (filtered.length !== 1 || filtered.some((t) => t.includes(RENAMED))) throw new Error(`filtered to ${filtered.length} items`);
  await app.getByLabel("Camera").selectOption({ label: "All cameras" });
  await nav(app, "Cameras");
  return `${total} events listed; 1 for ${CAMERA}`;
});

await step("D → A: the camera ends its stream; the live view says so plainly", async () => {
  await garden.getByRole("button", { name: "End stream" }).click();
  const state = await expectText(liveState(app, RENAMED), /^Stream ended$/, "live state");
  await app.getByRole("button", { name: `Close live view of ${RENAMED}` }).click();
  return state;
});

await step("A: the network is lost; the live view reconnects by itself when the server is back", async () => {
  console.log("OUTAGE");
  await expectText(liveState(app, CAMERA), /Reconnecting…/, "live state during the outage", 20_000);
  await nextStdinLine();
  const back = Date.now();
  await expectText(liveState(app, CAMERA), /^Live$/, "live state after the outage", 45_000);
  await liveVideoPlays(app, CAMERA);
  timings.reconnectMs = Date.now() - back;
  return `live again ${timings.reconnectMs} ms after the server was back`;
});

await step("A: disabling the camera turns its tile offline and stops its live view", async () => {
  await nav(app, "Devices");
  await app.getByRole("button", { name: `Disable ${CAMERA}` }).click();
  await nav(app, "Cameras");
  await expectText(app.getByRole("article", { name: CAMERA }).locator(".presence"), /^(Offline|Disabled)$/, "tile");
  await expectText(liveState(app, CAMERA), /^(Camera disabled|Camera is offline|Stream ended)$/, "live state");
  const stopped = await app.evaluate((label) => {
    const v = document.querySelector(`video[aria-label="${label}"]`);
    if (!v) return true;
    const tracks = v.srcObject ? v.srcObject.getTracks() : [];
    return tracks.every((t) => t.readyState === "ended") || !v.srcObject;
  }, `Live video from ${CAMERA}`);
  if (!stopped) throw new Error("the live video still runs");
});

await step("A: a camera that is offline is shown plainly", async () => {
  await nav(app, "Devices");
  await app.getByRole("button", { name: `Enable ${CAMERA}` }).click();
  // Re-enabling issues a new token, which /sim does not have yet: the camera stays offline.
  token = await app.getByRole("region", { name: "Pairing" }).getByLabel("Device token").inputValue({ timeout: STEP });
  await app.getByRole("region", { name: "Pairing" }).getByRole("button", { name: "Done" }).click();
  await nav(app, "Cameras");
  await app.getByRole("button", { name: `Close live view of ${CAMERA}` }).click().catch(() => {});
  await app.getByRole("button", { name: `Watch ${CAMERA}` }).click();
  return await expectText(liveState(app, CAMERA), /^Camera is offline$/, "live state");
});

await step("A: a stream the camera refuses is shown plainly", async () => {
  await sim.getByLabel("Pairing token (from the web app)").fill(token);
  await sim.getByRole("button", { name: "Pair with token" }).click();
  await sim.waitForFunction(() => document.getElementById("socketState").textContent === "connected", null, { timeout: STEP });
  await sim.getByLabel(/Auto-acknowledge commands/).uncheck();
  await expectText(app.getByRole("article", { name: CAMERA }).locator(".presence"), /^Online$/, "tile");
  await app.getByRole("button", { name: `Close live view of ${CAMERA}` }).click().catch(() => {});
  await app.getByRole("button", { name: `Watch ${CAMERA}` }).click();
  await sim.getByRole("button", { name: "Refuse stream" }).click({ timeout: STEP });
  return await expectText(liveState(app, CAMERA), /^The camera refused the stream$/, "live state");
});

await step("A: the phone-width layout", async () => {
  await app.setViewportSize({ width: 360, height: 740 });
  await app.getByRole("button", { name: `Close live view of ${CAMERA}` }).click().catch(() => {});
  await app.screenshot({ path: `${shots}/cameras-phone.png` });
  const overflow = await app.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`the page is ${overflow} px wider than a 360 px screen`);
  await nav(app, "Timeline");
  await app.screenshot({ path: `${shots}/timeline-phone.png` });
});

await step("C: a second user sees none of the first user's cameras, events or recordings", async () => {
  other = await open("C", "/");
  await signUp(other, bob.name, bob.email, bob.password);
  await other.getByText("No cameras yet").waitFor({ timeout: STEP });
  if (await other.getByRole("article", { name: CAMERA }).count()) throw new Error("Bob sees Alice's camera");
  await nav(other, "Timeline");
  await other.getByText("No motion events yet.").waitFor({ timeout: STEP });
  const recordingId = await app.evaluate(async () =>
    (await (await fetch("/recordings", { headers: { accept: "application/json" } })).json()).items[0].id);
  const answers = await other.evaluate(async ({ cameraId, recordingId }) => {
    const json = { accept: "application/json", "content-type": "application/json" };
    const call = async (method, path, body) => {
      const r = await fetch(path, { method, headers: json, body: body && JSON.stringify(body) });
      return `${method} ${path.split("?")[0]} ${r.status}`;
    };
    const events = await (await fetch(`/events?cameraDeviceId=${cameraId}`, { headers: json })).json();
    return [
      await call("POST", "/streams/request", { cameraDeviceId: cameraId }),
      await call("GET", `/recordings/${recordingId}`),
      await call("DELETE", `/recordings/${recordingId}`),
      await call("PATCH", `/devices/${cameraId}`, { name: "mine now" }),
      `events seen: ${(events.items || []).length}`,
    ];
  }, { cameraId, recordingId });
  const expected = [
    "POST /streams/request 404", `GET /recordings/${recordingId} 404`,
    `DELETE /recordings/${recordingId} 404`, `PATCH /devices/${cameraId} 404`, "events seen: 0",
  ];
  if (JSON.stringify(answers) !== JSON.stringify(expected)) throw new Error(`API answers ${JSON.stringify(answers)}`);
  return answers.join("; ");
});

await step("A: deleting a recording in the page removes it", async () => {
  const recordingId = await app.evaluate(async () => {
    const get = async (p) => (await fetch(p, { headers: { accept: "application/json" } })).json();
    for (let i = 0; i < 100; i += 1) {
      const [r] = (await get("/recordings")).items;
      if (r.status !== "recording") return r.id;
      await new Promise((done) => setTimeout(done, 200));
    }
    return null;
  });
  if (!recordingId) throw new Error("the recording never finished");
  await app.setViewportSize({ width: 1280, height: 800 });
  await nav(app, "Recordings");
  const list = app.getByRole("list", { name: "Recordings" });
  await list.getByRole("button", { name: /^Delete recording from / }).first().click();
  await list.getByRole("button", { name: /^Delete recording from / }).first().waitFor({ state: "detached", timeout: STEP });
  const status = await app.evaluate(async (id) => (await fetch(`/recordings/${id}`, { headers: { accept: "application/json" } })).status, recordingId);
  if (status !== 404) throw new Error(`the deleted recording answers ${status}`);
});

clearTimeout(overall);
console.log("TIMINGS " + JSON.stringify(timings));
await browser.close();
process.exit(0);
