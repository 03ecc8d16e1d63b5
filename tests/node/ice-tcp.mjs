// With UDP unusable, Chromium reaches the SFU over ICE-TCP (RFC 4571 on the media port).
// UDP is blocked by removing the server's UDP candidates from the answers, so the browser
// has no UDP path at all. Usage: node ice-tcp.mjs <baseURL> <sid> <publishToken> <subscribeToken>
import { launchChromium } from "./chromium.mjs";

const [base, sid, publishToken, subscribeToken] = process.argv.slice(2);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);
const browser = await launchChromium();
try {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/api/auth/ok");
  const tcpOnly = await page.evaluate(async ({ base, sid, publishToken, subscribeToken }) => {
    let sawTcpCandidate = false;
    const negotiate = async (pc, path, token) => {
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`${base}/${path}/${sid}`, {
        method: "POST",
        headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`${path} answered ${res.status}: ${text}`);
      const lines = text.split("\r\n").filter((l) => !(l.startsWith("a=candidate:") && / udp /i.test(l)));
      if (lines.some((l) => l.startsWith("a=candidate:") && / tcp /i.test(l) && l.includes("tcptype passive"))) sawTcpCandidate = true;
      await pc.setRemoteDescription({ type: "answer", sdp: lines.join("\r\n") });
    };
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    const pub = new RTCPeerConnection();
    for (const t of stream.getTracks()) pub.addTransceiver(t, { direction: "sendonly" });
    await negotiate(pub, "whip", publishToken);
    const viewer = new RTCPeerConnection();
    viewer.addTransceiver("video", { direction: "recvonly" });
    viewer.addTransceiver("audio", { direction: "recvonly" });
    await negotiate(viewer, "whep", subscribeToken);
    window.viewer = viewer;
    return sawTcpCandidate;
  }, { base, sid, publishToken, subscribeToken });
  if (!tcpOnly) throw new Error("the answer offered no passive ICE-TCP candidate");

  const deadline = Date.now() + 25_000;
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
      const remote = pair ? byId.get(pair.remoteCandidateId) : null;
      return { frames, remoteProtocol: remote ? remote.protocol : null, state: window.viewer.connectionState };
    });
    // The nominated pair's stats can lag the first decoded frame: wait for both.
    if (s.frames > 0 && s.remoteProtocol !== null) {
      if (s.remoteProtocol !== "tcp") throw new Error("media did not use ICE-TCP: " + JSON.stringify(s));
      console.log(JSON.stringify({ step: "ice-tcp", ...s }));
      break;
    }
    if (Date.now() > deadline) throw new Error("no frame over ICE-TCP: " + JSON.stringify(s));
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
