// Headless Chromium as every browser test starts it: loopback only, no background traffic,
// and (for media tests) the fake camera/microphone with permission prompts auto-accepted.
import { chromium } from "playwright-core";

export function launchChromium({ fakeMedia = true, extraArgs = [] } = {}) {
  const media = fakeMedia ? ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] : [];
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-component-update", "--disable-sync", ...media, ...extraArgs],
  });
}
