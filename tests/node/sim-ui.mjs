// Drives /sim/mobile-sim.html in headless Chromium with two tabs (separate browser
// contexts, so separate sessionStorage): tab A is a camera, tab B a client of the same user.
// Covers sign-up/sign-in, device registration, Socket.IO connect, linking, a command round
// trip (command:received on the camera, command:status "acknowledged" on the client) and a
// stream request that the camera auto-accepts and publishes over WHIP (Chromium's fake
// camera), the client watching it over WHEP until frames decode, and the stream's end.
//
// Usage: node sim-ui.mjs <baseURL>     e.g. http://127.0.0.1:3000
// Env: SIM_PAGE_FILE=/path/to/mobile-sim.html serves that file in place of the server's
// /sim/mobile-sim.html (the binary embeds the page at compile time); CHROMIUM_BIN.
// Exit status 0 on success; 1 on the first failure (with the last log entries of both tabs)
// or after a 60 s overall timeout.
import { randomBytes } from "node:crypto";
import { launchChromium } from "./chromium.mjs";

const base = (process.argv[2] || "").replace(/\/+$/, "");
if (!base) {
  console.error("usage: node sim-ui.mjs <baseURL>");
  process.exit(2);
}
const STEP_TIMEOUT = 15_000;
const SIM_PAGE_FILE = process.env.SIM_PAGE_FILE || "";
const pages = {};   // label -> page, for the failure dump
let browser;

async function lastLogs(label, page) {
  try {
    const rows = await page.$$eval("#log .log-entry", (els) =>
      els.slice(-10).map((e) => `${e.dataset.event} ${e.querySelector("pre")?.textContent ?? ""}`));
    const st = await page.textContent("#status").catch(() => "");
    const sock = await page.textContent("#socketState").catch(() => "");
    return [`--- tab ${label}: status=${JSON.stringify(st)} socket=${JSON.stringify(sock)}; last ${rows.length} log entries:`,
            ...rows.map((r) => "  " + (r.length > 600 ? r.slice(0, 600) + "…" : r))].join("\n");
  } catch (e) {
    return `--- tab ${label}: could not read the log (${e.message})`;
  }
}

let failing = false;
async function fail(message) {
  if (failing) return;
  failing = true;
  console.error("FAIL: " + message);
  const dump = Promise.all(Object.entries(pages).map(([l, p]) => lastLogs(l, p)));
  const out = await Promise.race([dump, new Promise((r) => setTimeout(() => r(["(log dump timed out)"]), 5_000))]);
  for (const block of out) console.error(block);
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 3_000))]);
  process.exit(1);
}

const overall = setTimeout(() => { fail("overall timeout of 60 s exceeded"); }, 60_000);

// Runs one step: prints "ok <name>" or fails with the step's name.
async function step(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ": " + detail : ""}`);
  } catch (e) {
    await fail(`${name}: ${e.message.split("\n")[0]}`);
  }
}

// Waits for a log entry with the given data-event whose text contains every string in `has`.
async function waitLog(page, event, has = [], timeout = STEP_TIMEOUT) {
  let loc = page.locator(`#log .log-entry[data-event="${event}"]`);
  for (const h of has) loc = loc.filter({ hasText: h });
  await loc.first().waitFor({ state: "attached", timeout }).catch(() => {
    throw new Error(`no "${event}" log entry containing ${JSON.stringify(has)} within ${timeout / 1000} s`);
  });
  return loc.first().locator("pre").textContent();
}

// Waits until the element's text satisfies `pred` (a string for "contains").
async function waitText(page, selector, pred, what, timeout = STEP_TIMEOUT) {
  const test = typeof pred === "string" ? (t) => t.includes(pred) : pred;
  const deadline = Date.now() + timeout;
  let text = "";
  while (Date.now() < deadline) {
    text = (await page.textContent(selector).catch(() => "")) ?? "";
    if (test(text)) return text;
    await page.waitForTimeout(100);
  }
  const st = await page.textContent("#status").catch(() => "");
  throw new Error(`${what}: ${selector} is ${JSON.stringify(text)} (status: ${JSON.stringify(st)})`);
}

async function openTab(label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[tab ${label}] page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") console.error(`[tab ${label}] console: ${m.text()}`); });
  page.on("dialog", (d) => d.accept());
  pages[label] = page;
  if (SIM_PAGE_FILE) {
    await page.route("**/sim/mobile-sim.html", (route) => route.fulfill({ path: SIM_PAGE_FILE, contentType: "text/html" }));
  }
  const res = await page.goto(base + "/sim/mobile-sim.html");
  if (!res || !res.ok()) throw new Error(`GET /sim/mobile-sim.html answered ${res && res.status()}`);
  await page.waitForSelector("#log", { state: "attached" });
  const ioLoaded = await page.evaluate(() => typeof window.io === "function");
  if (!ioLoaded) throw new Error("/sim/socket.io.min.js did not load (window.io missing)");
  return page;
}

async function register(page, name, role) {
  await page.fill("#deviceName", name);
  await page.selectOption("#role", role);
  await page.click("#register");
  const id = (await waitText(page, "#deviceId", (t) => t.trim().length > 0, "register")).trim();
  await waitText(page, "#deviceRole", (t) => t.trim() === role, "register role");
  return id;
}

async function connect(page) {
  await page.click("#connect");
  await waitText(page, "#socketState", (t) => t === "connected", "socket connect");
}

const email = `sim-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}@example.com`;
const password = "password-123";
let cam, phone, cameraId, phoneId, streamId;

try {
  browser = await launchChromium({
    // A document fulfilled by page.route has no server IP address, so Chromium's Local
    // Network Access checks treat it as public and block its WebSocket to 127.0.0.1.
    extraArgs: SIM_PAGE_FILE ? ["--disable-features=LocalNetworkAccessChecks,LocalNetworkAccessChecksWebSockets,LocalNetworkAccessChecksWebRTC"] : [],
  });
} catch (e) {
  await fail("could not launch Chromium: " + e.message);
}

// 1. camera tab
await step("A: open page", async () => {
  cam = await openTab("A");
  return base + "/sim/mobile-sim.html" + (SIM_PAGE_FILE ? " (served from " + SIM_PAGE_FILE + ")" : "");
});
await step("A: sign up", async () => {
  await cam.fill("#email", email);
  await cam.fill("#password", password);
  await cam.fill("#name", "Sim");
  await cam.click("#signUp");
  await waitText(cam, "#whoami", email, "sign up");
  return email;
});
await step("A: register camera", async () => { cameraId = await register(cam, "Sim camera", "camera"); return cameraId; });
await step("A: connect socket", async () => { await connect(cam); });

// 2. client tab
await step("B: open page", async () => { phone = await openTab("B"); });
await step("B: sign in", async () => {
  await phone.fill("#email", email);
  await phone.fill("#password", password);
  await phone.click("#signIn");
  await waitText(phone, "#whoami", email, "sign in");
});
await step("B: register client", async () => { phoneId = await register(phone, "Sim phone", "client"); return phoneId; });
await step("B: connect socket", async () => { await connect(phone); });
await step("B: refresh devices and pick the camera", async () => {
  await phone.click("#refreshDevices");
  await phone.waitForSelector(`#devices tr[data-device-id="${cameraId}"][data-role="camera"]`, { state: "attached", timeout: STEP_TIMEOUT });
  await phone.waitForSelector(`#cameraId option[value="${cameraId}"]`, { state: "attached", timeout: STEP_TIMEOUT });
  await phone.selectOption("#cameraId", cameraId);
  const online = await phone.getAttribute(`#devices tr[data-device-id="${cameraId}"]`, "data-online");
  return `camera online=${online}`;
});
await step("B: link camera", async () => {
  await phone.click("#link");
  await waitLog(phone, "api", ["POST /device-links", '"status":201']);
});

// 3. command round trip
await step("B: send take_snapshot", async () => {
  await phone.fill("#commandType", "take_snapshot");
  await phone.click("#sendCommand");
  await waitLog(phone, "api", ["POST /commands", '"status":201']);
});
await step("A: command:received", async () => { await waitLog(cam, "command:received", ["take_snapshot"]); });
await step("B: command:status acknowledged", async () => {
  await waitLog(phone, "command:status", ["take_snapshot", '"acknowledged"']);
});

// 4. stream
await step("B: request stream", async () => {
  await phone.click("#requestStream");
  streamId = (await waitText(phone, "#streamId", (t) => t.trim().length > 0, "request stream")).trim();
  return streamId;
});
await step("B: stream:requested", async () => { await waitLog(phone, "stream:requested", [streamId]); });
await step("A: command:received start_stream", async () => {
  await waitLog(cam, "command:received", ["start_stream", streamId]);
});
await step("A: publish credentials", async () => {
  await waitLog(cam, "api", [`/streams/${streamId}/publish-credentials`, '"status":200']);
});
await step("B: stream:started", async () => { await waitLog(phone, "stream:started", [streamId]); });
await step("B: subscribe credentials", async () => {
  await phone.click("#subscribeCreds");
  await waitText(phone, "#subscribeResult", '"token"', "subscribe credentials");
});
await step("B: watch (WHEP)", async () => {
  await phone.click("#watch");
  await waitLog(phone, "whep", [`/whep/${streamId}`, '"status":201']);
});
{
  // Polls the viewer's stats every 100 ms for up to 15 s until a video frame has decoded.
  const deadline = Date.now() + 15_000;
  let last = null;
  let frames = 0;
  try {
    while (Date.now() < deadline) {
      last = await phone.evaluate(async () => {
        const pc = window.viewerPc;
        if (!pc) return { pc: false };
        const out = { state: pc.connectionState, framesDecoded: 0 };
        (await pc.getStats()).forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "video") out.framesDecoded = r.framesDecoded || 0;
        });
        return out;
      });
      if (last.framesDecoded > 0) { frames = last.framesDecoded; break; }
      await phone.waitForTimeout(100);
    }
  } catch (e) {
    await fail(`B: live video decoded: ${e.message.split("\n")[0]}`);
  }
  if (frames > 0) console.log(`ok   B: live video decoded (${frames} frames)`);
  else {
    const whip = await cam.$$eval('#log .log-entry[data-event^="whip"] pre', (els) => els.map((e) => e.textContent)).catch(() => []);
    await fail(`B: live video decoded: no video frame decoded within 15 s (viewer ${JSON.stringify(last)}; camera whip log ${JSON.stringify(whip)})`);
  }
}
await step("B: end stream", async () => { await phone.click("#endStream"); });
await step("B: stream:ended", async () => { await waitLog(phone, "stream:ended", [streamId]); });
await step("A: stream:ended", async () => { await waitLog(cam, "stream:ended", [streamId]); });

clearTimeout(overall);
await browser.close();
console.log("PASS: mobile simulator flow");
process.exit(0);
