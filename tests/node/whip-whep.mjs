// Headless Chromium publishes its fake camera via WHIP and two other pages watch via WHEP.
// Usage: node whip-whep.mjs <baseURL> <streamSessionId> <publishToken> <viewerToken1> <viewerToken2>
// Prints JSON lines; exits 1 on failure.
import { launchChromium } from "./chromium.mjs";

const [base, sid, publishToken, viewerToken1, viewerToken2, playbackToken] = process.argv.slice(2);
const viewerTokens = [viewerToken1, viewerToken2];
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60_000);

const browser = await launchChromium();

async function newPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  // Any page of the server gives the scripts a same-origin context.
  await page.goto(base + "/api/auth/ok");
  return page;
}

try {
  const publisher = await newPage();
  const published = await publisher.evaluate(async ({ base, sid, token }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
    const pc = new RTCPeerConnection();
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`${base}/whip/${sid}`, {
      method: "POST",
      headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
      body: pc.localDescription.sdp,
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`WHIP answered ${res.status}: ${text}`);
    await pc.setRemoteDescription({ type: "answer", sdp: text });
    window.pc = pc;
    return { status: res.status, location: res.headers.get("location"), etag: res.headers.get("etag") };
  }, { base, sid, token: publishToken });
  console.log(JSON.stringify({ step: "whip", ...published }));

  const viewers = [];
  for (const token of viewerTokens) {
    const page = await newPage();
    const started = Date.now();
    const result = await page.evaluate(async ({ base, sid, token }) => {
      // Time to first frame: from the WHEP request until the decoder has output a frame,
      // polled inside the page so the test harness adds no delay.
      const t0 = performance.now();
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`${base}/whep/${sid}`, {
        method: "POST",
        headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`WHEP answered ${res.status}: ${text}`);
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      window.pc = pc;
      let firstFrameMs = null;
      while (firstFrameMs === null && performance.now() - t0 < 20_000) {
        (await pc.getStats()).forEach((r) => {
          if (r.type === "inbound-rtp" && r.kind === "video" && r.framesDecoded > 0) firstFrameMs = Math.round(performance.now() - t0);
        });
        if (firstFrameMs === null) await new Promise((r) => setTimeout(r, 5));
      }
      return { status: res.status, location: res.headers.get("location"), firstFrameMs };
    }, { base, sid, token });
    viewers.push({ page, started, ...result });
  }

  const stats = (page) => page.evaluate(async () => {
    const out = { framesDecoded: 0, audioPackets: 0, state: window.pc.connectionState };
    (await window.pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") out.framesDecoded = r.framesDecoded || 0;
      if (r.type === "inbound-rtp" && r.kind === "audio") out.audioPackets = r.packetsReceived || 0;
    });
    return out;
  });

  for (const [i, v] of viewers.entries()) {
    let s;
    for (;;) {
      s = await stats(v.page);
      if (s.framesDecoded > 0) break;
      if (Date.now() - v.started > 20_000) throw new Error(`viewer ${i} decoded no frame: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const firstFrameMs = v.firstFrameMs;
    // Without the SFU's keyframe request a late joiner waits for Chrome's next periodic
    // keyframe (seconds); 1.5 s catches that while tolerating a busy 2-core machine.
    if (firstFrameMs === null || firstFrameMs >= 1500) throw new Error(`viewer ${i} took ${firstFrameMs} ms to its first frame`);
    await new Promise((r) => setTimeout(r, 1500));
    const later = await stats(v.page);
    if (later.framesDecoded <= s.framesDecoded) throw new Error(`viewer ${i} stopped decoding: ${JSON.stringify(later)}`);
    if (later.audioPackets <= 0) throw new Error(`viewer ${i} received no audio: ${JSON.stringify(later)}`);
    console.log(JSON.stringify({ step: "viewer", viewer: i, firstFrameMs, framesDecoded: later.framesDecoded, audioPackets: later.audioPackets }));
  }
  // The target: a viewer decodes its first frame within 500 ms on loopback. Scheduling
  // noise on a shared 2-core machine can delay one page, so the best viewer must meet it.
  const best = Math.min(...viewers.map((v) => v.firstFrameMs));
  if (best >= 500) throw new Error(`no viewer decoded a frame within 500 ms (best ${best} ms)`);
  // Media figures while the stream runs.
  const metrics = await viewers[0].page.evaluate(async () => (await fetch("/metrics")).text());
  const figure = (name) => Number((metrics.match(new RegExp("^" + name + " (\\d+)$", "m")) || [])[1]);
  console.log(JSON.stringify({ step: "metrics", ingressBps: figure("watchpost_media_ingress_bitrate_bps"), egressBps: figure("watchpost_media_egress_bitrate_bps"), nacksReceived: figure("watchpost_media_nacks_received_total"), nacksSent: figure("watchpost_media_nacks_sent_total") }));
  if (!(figure("watchpost_media_ingress_bitrate_bps") > 0) || !(figure("watchpost_media_egress_bitrate_bps") > 0)) throw new Error("bitrates missing from /metrics while streaming");
  if (Number.isNaN(figure("watchpost_media_nacks_received_total")) || Number.isNaN(figure("watchpost_media_nacks_sent_total"))) throw new Error("NACK counters missing from /metrics");
  if (playbackToken) {
    // The standalone viewer page plays the stream with a playback token from its URL.
    const watch = await (await browser.newContext()).newPage();
    // The token rides in the fragment, which the browser never sends to the server.
    await watch.goto(`${base}/watch/${sid}#token=${encodeURIComponent(playbackToken)}`);
    // The page takes it and drops it from the address bar (and so from bookmarks, history).
    await watch.waitForFunction(() => !location.hash, null, { timeout: 5_000 });
    const started = Date.now();
    for (;;) {
      const s = await watch.evaluate(async () => {
        if (!window.pc) return { framesDecoded: 0 };
        let frames = 0;
        (await window.pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0; });
        return { framesDecoded: frames, status: document.getElementById("status").textContent };
      });
      if (s.framesDecoded > 0) { console.log(JSON.stringify({ step: "watch-page", ...s })); break; }
      if (Date.now() - started > 20_000) throw new Error("watch page decoded no frame: " + JSON.stringify(s));
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  // Hang up the publisher explicitly (DTLS close), as a camera app would when it stops.
  await publisher.evaluate(() => window.pc.close());
  await new Promise((r) => setTimeout(r, 300));
  console.log(JSON.stringify({ step: "done" }));
  clearTimeout(timer);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
  clearTimeout(timer);
}
