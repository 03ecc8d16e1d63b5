// Headless Chromium publishes its fake camera and microphone over WHIP for a while, then
// hangs up (WHIP DELETE), as a browser camera would.
// Usage: node chromium-publish.mjs <baseURL> <streamSessionId> <publishToken> <seconds>
import { launchChromium } from "./chromium.mjs";

const [base, sid, token, seconds] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, (Number(seconds) + 60) * 1000);
const browser = await launchChromium();
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/api/auth/ok");
  const result = await page.evaluate(async ({ base, sid, token, seconds }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`${base}/whip/${sid}`, {
      method: "POST",
      headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
      body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) throw new Error(`WHIP answered ${res.status}: ${answer}`);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    const location = new URL(res.headers.get("location"), base).toString();
    const t0 = Date.now();
    while (pc.connectionState !== "connected") {
      if (Date.now() - t0 > 10_000) throw new Error(`not connected: ${pc.connectionState}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const connectedAfterMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    let framesSent = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === "outbound-rtp" && s.kind === "video") framesSent += s.framesSent || 0; });
    const del = await fetch(location, { method: "DELETE", headers: { authorization: `Bearer ${token}` } });
    pc.close();
    return { connectedAfterMs, framesSent, deleteStatus: del.status };
  }, { base, sid, token, seconds: Number(seconds) });
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(String(e));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  await browser.close();
}
