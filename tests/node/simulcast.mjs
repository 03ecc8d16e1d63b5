// A simulcast publisher (two layers) and one viewer: the viewer decodes one layer at a
// time, never a mix. The SFU may move it between layers as its bandwidth estimate changes
// (at keyframes); every resolution change the decoder sees must be one of the switches the
// server reports for this viewer in /streams/{id}/sfu/session.
// Usage: node simulcast.mjs <baseURL> <sid> <publishToken> <subscribeToken> <deviceToken>
import { launchChromium } from "./chromium.mjs";

const [base, sid, publishToken, subscribeToken, deviceToken] = process.argv.slice(2);
const viewerOnServer = async () => {
  const res = await fetch(`${base}/streams/${sid}/sfu/session`, { headers: { authorization: `Bearer ${deviceToken}` } });
  const session = await res.json();
  return session.participants.find((p) => p.role === "subscriber");
};
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);
const browser = await launchChromium();
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
  const before = await viewerOnServer();
  const widths = [];
  let last = first;
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 75));
    last = await sample();
    if (last.width) widths.push(last.width);
  }
  const after = await viewerOnServer();
  console.log(JSON.stringify({ step: "viewer", first, last, widths, before, after }));
  if (last.frames <= first.frames) throw new Error("viewer stopped decoding");
  if (!["l", "h"].includes(after.layer)) throw new Error("the server reports no layer: " + JSON.stringify(after));
  // Mixed layers show as resolution changes the server never made.
  const changes = widths.filter((w, i) => i > 0 && w !== widths[i - 1]).length;
  const switches = after.layerSwitches - before.layerSwitches;
  if (changes > switches) throw new Error(`the viewer saw ${changes} resolution changes but the server switched layers ${switches} times (resolutions ${widths.join(", ")})`);
  if (last.layersSending < 2) throw new Error("the publisher is not sending two layers: " + JSON.stringify(last));
  clearTimeout(timer);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(timer);
}
