// A viewer restricted to TURN relay candidates (iceTransportPolicy "relay") watches a stream
// published from headless Chromium. Usage:
//   node turn-relay.mjs <baseURL> <sid> <publishToken> <subscribeToken> <iceServersJSON>
import { launchChromium } from "./chromium.mjs";

const [base, sid, publishToken, subscribeToken, iceJson] = process.argv.slice(2);
const iceServers = JSON.parse(iceJson);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);
const browser = await launchChromium();
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/api/auth/ok");
  await page.evaluate(async ({ base, sid, publishToken, subscribeToken, iceServers }) => {
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
    };
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    const pub = new RTCPeerConnection();
    for (const t of stream.getTracks()) pub.addTransceiver(t, { direction: "sendonly" });
    await negotiate(pub, "whip", publishToken);
    const viewer = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" });
    viewer.addTransceiver("video", { direction: "recvonly" });
    viewer.addTransceiver("audio", { direction: "recvonly" });
    // Relay candidates must exist before the checks can start; gather them first.
    const gathered = new Promise((resolve) => {
      viewer.onicegatheringstatechange = () => viewer.iceGatheringState === "complete" && resolve();
      setTimeout(resolve, 5000);
    });
    await negotiate(viewer, "whep", subscribeToken);
    await gathered;
    window.viewer = viewer;
  }, { base, sid, publishToken, subscribeToken, iceServers });

  const deadline = Date.now() + 20_000;
  for (;;) {
    const s = await page.evaluate(async () => {
      const stats = await window.viewer.getStats();
      let frames = 0, pair = null;
      const byId = new Map();
      stats.forEach((r) => {
        byId.set(r.id, r);
        if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0;
        if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
      });
      const local = pair ? byId.get(pair.localCandidateId) : null;
      return { frames, localType: local ? local.candidateType : null, state: window.viewer.connectionState };
    });
    // The nominated pair's stats can lag the first decoded frame: wait for both.
    if (s.frames > 0 && s.localType !== null) {
      if (s.localType !== "relay") throw new Error("media did not go through TURN: " + JSON.stringify(s));
      console.log(JSON.stringify({ step: "relay", ...s }));
      break;
    }
    if (Date.now() > deadline) throw new Error("no frame through the relay: " + JSON.stringify(s));
    await new Promise((r) => setTimeout(r, 100));
  }
  clearTimeout(timer);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(timer);
}
