// The web app's "Continue with Google" on a server where Google sign-in is configured: the
// button is there, and pressing it takes the browser to the provider's authorization page
// (GOOGLE_AUTHORIZE_URL, a loopback address the test intercepts: nothing leaves the
// machine) with the server's client id, a state and PKCE. A failed sign-in's ?error= shows
// only the wording of the codes the server and Google send.
// Usage: node web-app-google.mjs <baseURL> <authorizeURL>   Prints the provider URL.
import { launchChromium } from "./chromium.mjs";

const [base, authorize] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);
const browser = await launchChromium({ fakeMedia: false });
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  let reached = null;
  await page.route(`${authorize}**`, (route) => {
    reached = route.request().url();
    return route.fulfill({ contentType: "text/html", body: "<title>provider</title>" });
  });
  // A failed sign-in comes back with ?error=: known codes are worded, and text someone
  // put in a link is not shown.
  const alertFor = async (query) => {
    await page.goto(base + "/" + query);
    await page.getByRole("button", { name: "Continue with Google" }).waitFor({ timeout: 15_000 });
    return (await page.getByRole("alert").first().textContent()).trim();
  };
  const notLinked = await alertFor("?error=account_not_linked");
  if (!/has not verified the email/.test(notLinked)) throw new Error(`account_not_linked shows ${JSON.stringify(notLinked)}`);
  const forged = await alertFor("?error=Your_account_is_locked_call_0800_123");
  if (forged !== "Google sign-in failed.") throw new Error(`a forged error shows ${JSON.stringify(forged)}`);
  await page.goto(base + "/");
  const button = page.getByRole("button", { name: "Continue with Google" });
  await button.waitFor({ timeout: 15_000 });
  await button.click();
  await page.waitForURL(`${authorize}**`, { timeout: 15_000 });
  const url = new URL(reached);
  for (const name of ["client_id", "state", "code_challenge", "redirect_uri"]) {
    if (!url.searchParams.get(name)) throw new Error(`the provider URL has no ${name}: ${reached}`);
  }
  console.log(reached);
} catch (e) {
  console.error(String(e));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  await browser.close();
}
