// A simulcast publisher (two layers) and one viewer: the viewer must get exactly one layer
// (stable resolution, frames keep decoding), never a mix.
// Usage: node simulcast.mjs <baseURL> <sid> <publishToken> <subscribeToken>
import { chromium } from "playwright-core";

const [base, sid, publishToken, subscribeToken] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/api/auth/ok");
  const offered = await page.evaluate(async ({ base, sid, publishToken, subscribeToken }) => {
    const negotiate = async (pc, path, token) => {
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`${base}/${path}/${sid}`, {
        method: "POST",
        headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`${path} answered ${res.status}: ${text}`);
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      return text;
    };
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { exact: 1280 }, height: { exact: 720 }, frameRate: 15 }, audio: false });
    const pub = new RTCPeerConnection();
    pub.addTransceiver(stream.getVideoTracks()[0], {
      direction: "sendonly",
      sendEncodings: [
        { rid: "l", scaleResolutionDownBy: 2, maxBitrate: 300_000 },
        { rid: "h", maxBitrate: 1_200_000 },
      ],
    });
    // Keep both layers alive on a busy 2-core machine: without this Chrome's CPU-overuse
    // adaptation may shrink the top layer until simulcast collapses to one stream.
    const sender = pub.getSenders()[0];
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await sender.setParameters(params).catch(() => {});
    const answer = await negotiate(pub, "whip", publishToken);
    window.pub = pub;
    const viewer = new RTCPeerConnection();
    viewer.addTransceiver("video", { direction: "recvonly" });
    await negotiate(viewer, "whep", subscribeToken);
    window.viewer = viewer;
    return { simulcastInOffer: pub.localDescription.sdp.includes("a=simulcast:send"), simulcastInAnswer: answer.includes("a=simulcast:recv") };
  }, { base, sid, publishToken, subscribeToken });
  console.log(JSON.stringify({ step: "negotiated", ...offered }));
  if (!offered.simulcastInOffer || !offered.simulcastInAnswer) throw new Error("simulcast was not negotiated");

  const sample = () => page.evaluate(async () => {
    let v = { frames: 0, width: 0 };
    (await window.viewer.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") v = { frames: r.framesDecoded || 0, width: r.frameWidth || 0 };
    });
    let layers = 0;
    (await window.pub.getStats()).forEach((r) => { if (r.type === "outbound-rtp" && r.kind === "video" && (r.framesEncoded || 0) > 0) layers++; });
    return { ...v, layersSending: layers };
  });
  const deadline = Date.now() + 20_000;
  let first;
  for (;;) {
    first = await sample();
    // Measure only once both layers are flowing and the viewer decodes.
    if (first.frames > 0 && first.layersSending >= 2) break;
    if (Date.now() > deadline) throw new Error("viewer decoded nothing: " + JSON.stringify(first));
    await new Promise((r) => setTimeout(r, 100));
  }
  const widths = [];
  let last = first;
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 75));
    last = await sample();
    if (last.width) widths.push(last.width);
  }
  console.log(JSON.stringify({ step: "viewer", first, last, widths }));
  if (last.frames <= first.frames) throw new Error("viewer stopped decoding");
  // One upgrade to a better layer (at its keyframe) is expected; mixed layers show as the
  // resolution going back down or flapping.
  const changes = widths.filter((w, i) => i > 0 && w !== widths[i - 1]).length;
  const wentDown = widths.some((w, i) => i > 0 && w < widths[i - 1]);
  if (wentDown || changes > 1) throw new Error("the viewer saw layers mixed (resolutions " + widths.join(", ") + ")");
  if (last.layersSending < 2) throw new Error("the publisher is not sending two layers: " + JSON.stringify(last));
  clearTimeout(timer);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(timer);
}
