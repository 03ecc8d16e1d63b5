// Drives /admin in headless Chromium: upload a file through the page, see it listed,
// delete it. Usage: node admin-ui.mjs <baseURL> <user> <password>
import { launchChromium } from "./chromium.mjs";

const [base, username, password, expectDevice] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);

const browser = await launchChromium({ fakeMedia: false });
try {
  const context = await browser.newContext({ httpCredentials: { username, password } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/admin");
  await page.waitForSelector("#objects");
  console.log("loaded /admin");
  if (expectDevice) {
    await page.locator("#devices td", { hasText: expectDevice }).first().waitFor({ timeout: 10_000 });
    console.log("devices table lists", expectDevice);
  }
  const name = `hello-${Date.now()}.txt`;
  await page.setInputFiles("#file", { name, mimeType: "text/plain", buffer: Buffer.from("hello from chromium") });
  await page.click("#upload");
  const row = page.locator(`tr[data-key$="${name}"]`);
  await row.waitFor({ timeout: 15_000 }).catch(async (e) => {
    console.error("status:", await page.textContent("#status"));
    throw e;
  });
  const size = await row.locator("td.num").textContent();
  if (size !== "19 B") throw new Error("unexpected size shown: " + size);
  console.log("uploaded and listed", name, size);
  await row.locator("button.delete").click();
  await row.waitFor({ state: "detached", timeout: 15_000 });
  console.log("deleted", name);
  clearTimeout(timer);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(timer);
}
