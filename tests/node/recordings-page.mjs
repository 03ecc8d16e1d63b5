// The web app's recordings view (what a browser gets at /recordings) in headless Chromium,
// used as a person would: sign in by the form's labels, press the first recording's Play
// button, and watch it play across its first segment cut. Prints JSON; exits 1 on failure.
// Usage: node recordings-page.mjs <baseURL> <email> <password> <secondsToWatch>
import { launchChromium } from "./chromium.mjs";

const [base, email, password, watchFor] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 90_000);
const browser = await launchChromium({ fakeMedia: false, extraArgs: ["--autoplay-policy=no-user-gesture-required"] });
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/recordings");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Recordings" }).waitFor({ timeout: 10_000 });
  const play = page.getByRole("list", { name: "Recordings" }).getByRole("button", { name: /^Play recording from / }).first();
  await play.waitFor({ timeout: 10_000 });
  await play.click();
  // Sample the playhead every 100 ms: a pause at a segment cut shows as the clock
  // standing still while the video is not over.
  const result = await page.evaluate(async (watchFor) => {
    const video = document.querySelector('video[aria-label="Recording player"]');
    const t0 = performance.now();
    while (video.currentTime === 0) {
      if (performance.now() - t0 > 15_000) throw new Error(`never started: readyState ${video.readyState}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    let last = video.currentTime, lastMoved = performance.now(), longestStallMs = 0, waiting = 0;
    video.addEventListener("waiting", () => { waiting += 1; });
    const started = performance.now();
    while (video.currentTime < watchFor && !video.ended) {
      await new Promise((r) => setTimeout(r, 100));
      const now = performance.now();
      if (video.currentTime > last) { last = video.currentTime; lastMoved = now; }
      longestStallMs = Math.max(longestStallMs, now - lastMoved);
      if (now - started > (watchFor + 20) * 1000) break;
    }
    const q = video.getVideoPlaybackQuality();
    return { currentTime: video.currentTime, longestStallMs: Math.round(longestStallMs), waiting,
             width: video.videoWidth, height: video.videoHeight, frames: q.totalVideoFrames,
             buffered: video.buffered.length ? video.buffered.end(0) : 0 };
  }, Number(watchFor));
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(String(e));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  await browser.close();
}
