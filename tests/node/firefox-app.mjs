// The web app in Firefox (Debian's firefox-esr over WebDriver BiDi, driven by
// puppeteer-core): sign up, register a camera (token and QR code), pair /sim (in Chromium,
// the camera) with the token, see the tile turn online over Firefox's Socket.IO session,
// open the live view, and check the phone-width layout. Elements are found by role and
// accessible name.
// Usage: node firefox-app.mjs <baseURL>     Env: FIREFOX_BIN (default /usr/bin/firefox-esr)
import puppeteer from "puppeteer-core";
import { launchChromium } from "./chromium.mjs";

const base = (process.argv[2] || "").replace(/\/+$/, "");
const timer = setTimeout(() => { console.error("FAIL: timed out after 90 s"); process.exit(1); }, 90_000);
let firefox, chromium;

// Finds a visible element by role and accessible name (aria-label, its label, its text or
// alt) in the page: puppeteer's ARIA selectors need CDP, which Firefox does not speak.
function find(page, role, name, timeout = 15_000) {
  return page.waitForFunction((role, name) => {
    const tags = { button: "button", link: "a", textbox: "input, textarea", navigation: "nav",
                   region: "section, [role=region]", combobox: "select" }[role];
    const accessibleName = (el) => (el.getAttribute("aria-label")
      || (el.labels && el.labels[0] && el.labels[0].textContent) || el.textContent || "").trim();
    return [...document.querySelectorAll(tags)]
      .find((el) => accessibleName(el) === name && el.getClientRects().length > 0) || null;
  }, { timeout, polling: 100 }, role, name).then((handle) => handle.asElement());
}
const click = async (page, role, name) => (await find(page, role, name)).click();
async function fill(page, name, value) {
  const input = await find(page, "textbox", name);
  await input.click({ count: 3 });
  await input.type(value);
}

async function step(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ": " + detail : ""}`);
  } catch (e) {
    console.error(`FAIL: ${name}: ${e.message.split("\n")[0]}`);
    await firefox?.close().catch(() => {});
    await chromium?.close().catch(() => {});
    process.exit(1);
  }
}

const textOf = (page, selector) => page.$eval(selector, (el) => el.textContent.trim()).catch(() => "");
async function until(what, fn, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} (last: ${JSON.stringify(last)})`);
}

const email = `firefox-${Date.now().toString(36)}@example.com`;
let app, token;

await step("Firefox: launch", async () => {
  firefox = await puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX_BIN || "/usr/bin/firefox-esr",
    headless: true,
    // Autoplay of the muted live video without a gesture; no background traffic.
    extraPrefsFirefox: {
      "media.autoplay.default": 0,
      "app.update.enabled": false,
      "browser.shell.checkDefaultBrowser": false,
      "network.captive-portal-service.enabled": false,
      "datareporting.policy.dataSubmissionEnabled": false,
    },
  });
  app = await firefox.newPage();
  app.on("pageerror", (e) => console.error(`[firefox] page error: ${e.message}`));
  await app.setViewport({ width: 1280, height: 800 });
  await app.goto(base + "/");
  return await firefox.version();
});

await step("Firefox: sign up", async () => {
  await click(app, "button", "Create an account");
  await fill(app, "Name", "Firefox user");
  await fill(app, "Email", email);
  await fill(app, "Password", "firefox-pass-1");
  await click(app, "button", "Sign up");
  await find(app, "navigation", "Main");
});

await step("Firefox: register a camera; token and QR code", async () => {
  await click(app, "link", "Devices");
  await fill(app, "Device name", "Porch");
  await click(app, "button", "Register device");
  token = await until("a device token", async () => (await find(app, "textbox", "Device token")).evaluate((i) => i.value));
  const qr = await app.$eval(`img[alt="Pairing QR code"]`, (img) => img.naturalWidth);
  if (qr < 100) throw new Error(`QR code ${qr} px wide`);
  await click(app, "button", "Done");
});

await step("Chromium /sim pairs as the camera; the Firefox tile turns online", async () => {
  chromium = await launchChromium();
  const sim = await (await chromium.newContext()).newPage();
  await sim.goto(base + "/sim/mobile-sim.html");
  await sim.getByLabel("Pairing token (from the web app)").fill(token);
  await sim.getByRole("button", { name: "Pair with token" }).click();
  await click(app, "link", "Cameras");
  await until("the tile says Online", async () => (await textOf(app, 'article[aria-label="Porch"] .presence')) === "Online");
});

await step("Firefox: a live view opens and shows its connection state", async () => {
  // Firefox pairs no loopback ICE candidates, and the test server's media address is
  // 127.0.0.1 (tests stay on loopback), so the video itself is checked in Chromium; here
  // the view, its controls and its state are.
  await click(app, "button", "Watch Porch");
  for (const name of ["Audio", "Full screen", "Close live view of Porch"]) await find(app, "button", name);
  return await until("a connection state", async () => textOf(app, '[aria-label="Live: Porch"] .live-state'));
});

await step("Firefox: the phone-width layout has no sideways scroll", async () => {
  await app.setViewport({ width: 360, height: 740 });
  const overflow = await app.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`${overflow} px wider than the screen`);
});

clearTimeout(timer);
await firefox.close();
await chromium.close();
