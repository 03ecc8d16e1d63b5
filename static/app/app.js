// Watchpost web app: live cameras, the motion timeline, recordings and device pairing for
// the signed-in household, over the public REST API, Socket.IO and WHEP.
//
// No build step and no framework. The page runs under a strict Content-Security-Policy (no
// inline styles or handlers), so every element is built here with createElement and styled
// through classes in app.css; API data only ever reaches the page as text.

const PAGE_SIZE = 25;
const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000, 10000];
const TOAST_MS = 8000;
const OUTAGE_WINDOW_MS = 3000;
const STALL_MS = 4000;
const FIRST_MEDIA_MS = 15000; // a camera that just accepted may take a while to publish

/* ------------------------------------------------------------------ DOM helpers */

// Keys written as DOM properties; every other key becomes an attribute.
const DOM_PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "readOnly", "tabIndex", "htmlFor"]);

function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (DOM_PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

let uidCounter = 0;
const uid = (prefix = "id") => `${prefix}-${++uidCounter}`;

const ICON_PATHS = {
  logo: "M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z M12 9a3 3 0 1 0 0 6 3 3 0 1 0 0-6z",
  camera: "M3 7h12v10H3z M15 10.5l6-3.5v10l-6-3.5z",
  timeline: "M12 3a9 9 0 1 0 0 18 9 9 0 1 0 0-18z M12 7v5l3.5 2",
  film: "M4 4h16v16H4z M8 4v16 M16 4v16 M4 9h4 M4 15h4 M16 9h4 M16 15h4",
  devices: "M7 2h10v20H7z M11 18h2",
  play: "M8 5l11 7-11 7z",
  soundOn: "M4 9h4l5-4v14l-5-4H4z M16.5 9a4 4 0 0 1 0 6 M19 6.5a8 8 0 0 1 0 11",
  soundOff: "M4 9h4l5-4v14l-5-4H4z M17 9.5l5 5 M22 9.5l-5 5",
  fullscreen: "M4 9V4h5 M15 4h5v5 M20 15v5h-5 M9 20H4v-5",
  close: "M6 6l12 12 M18 6L6 18",
  bell: "M6 16V11a6 6 0 0 1 12 0v5l2 2H4z M10 20a2 2 0 0 0 4 0",
  left: "M15 5l-7 7 7 7",
  right: "M9 5l7 7-7 7",
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", `icon icon-${name}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICON_PATHS[name]);
  svg.append(path);
  return svg;
}

// A labelled form control: { wrap, input }.
function field(label, control) {
  control.id ||= uid("field");
  return { wrap: h("div", { class: "field" }, h("label", { for: control.id }, label), control), input: control };
}

function option(value, label, selected = false) {
  return h("option", { value, selected }, label);
}

// Replaces a select's options, keeping the chosen value when it still exists.
function setOptions(select, options, fallback = "") {
  const same = select.options.length === options.length
    && options.every(([value, label], i) => select.options[i].value === value && select.options[i].textContent === label);
  if (same) return; // rebuilding would close a select the user has open
  const previous = select.options.length ? select.value : null;
  select.replaceChildren(...options.map(([value, label]) => option(value, label)));
  const values = options.map(([value]) => value);
  select.value = values.includes(previous) ? previous : values.includes(fallback) ? fallback : (values[0] ?? "");
}

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
});

/* ------------------------------------------------------------------ formatting */

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const scoreFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

const fmtDateTime = (iso) => (iso ? dateTimeFormat.format(new Date(iso)) : "—");
const fmtTime = (iso) => (iso ? timeFormat.format(new Date(iso)) : "—");

function fmtRelative(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 45) return "just now";
  if (seconds < 3600) return relativeFormat.format(-Math.round(seconds / 60), "minute");
  if (seconds < 86400) return relativeFormat.format(-Math.round(seconds / 3600), "hour");
  return fmtDateTime(iso);
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.round((ms ?? 0) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function fmtSize(bytes) {
  if (bytes == null) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${new Intl.NumberFormat(undefined, { maximumFractionDigits: unit ? 1 : 0 }).format(value)} ${units[unit]}`;
}

// <input type="date"> value for a local day, and that day's bounds as RFC 3339.
function localDayValue(date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function dayBounds(value) {
  const [y, m, d] = value.split("-").map(Number);
  return { from: new Date(y, m - 1, d).toISOString(), to: new Date(y, m - 1, d + 1).toISOString() };
}

function shiftDay(value, days) {
  const [y, m, d] = value.split("-").map(Number);
  return localDayValue(new Date(y, m - 1, d + days));
}

const kindLabel = (role) => (role === "camera" ? "Camera" : "Viewer");
const presenceLabel = (d) => (d.status === "disabled" ? "Disabled" : d.online ? "Online" : "Offline");

/* ------------------------------------------------------------------ API */

class ApiError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

async function readBody(res) {
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

function errorMessage(body, status) {
  if (body && typeof body === "object") {
    if (typeof body.message === "string" && body.message) return body.message;
    if (typeof body.error === "string" && body.error) return body.error;
    if (typeof body.error?.message === "string") return body.error.message;
  }
  if (typeof body === "string" && body.length < 200 && !body.trimStart().startsWith("<")) return body;
  return `The server answered with an error (HTTP ${status}).`;
}

async function api(path, { method = "GET", body, signal, keepalive } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, keepalive, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError("Cannot reach the Watchpost server. Check the connection.", 0, "NETWORK");
  }
  const data = res.status === 204 ? null : await readBody(res);
  if (!res.ok) {
    const err = new ApiError(errorMessage(data, res.status), res.status, data?.code ?? "");
    if (res.status === 401 && !path.startsWith("/api/auth/")) checkSignedOut();
    throw err;
  }
  return data;
}

async function fetchAll(path, max = 2000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...(page?.items ?? []));
    cursor = page?.nextCursor ?? null;
  } while (cursor && items.length < max);
  return items;
}

const enc = encodeURIComponent;

/* ------------------------------------------------------------------ app state */

const app = {
  root: document.getElementById("app"),
  user: null,
  google: false,
  devices: new Map(),
  devicesLoaded: false,
  lastMotion: new Map(), // camera id → ISO time of its newest motion event, or null for none
  motionLoading: new Set(),
  socket: null,
  socketConnectedOnce: false,
  socketLostAt: 0,
  view: null,
  shell: null,
};

// Live views outlive the Cameras page so streams keep running while the user looks elsewhere.
const liveViews = new Map();
const liveGrid = h("div", { class: "live-grid" });
const liveArea = h("div", { class: "live-area", hidden: true }, h("h2", { class: "section-title" }, "Live"), liveGrid);

const cameras = () => [...app.devices.values()]
  .filter((d) => d.role === "camera")
  .sort((a, b) => a.name.localeCompare(b.name));
const viewers = () => [...app.devices.values()]
  .filter((d) => d.role !== "camera")
  .sort((a, b) => a.name.localeCompare(b.name));
const deviceName = (id, fallback = "Unknown device") => app.devices.get(id)?.name ?? fallback;
const cameraName = (id) => deviceName(id, "Unknown camera");

/* ------------------------------------------------------------------ boot and sign-in */

async function boot() {
  window.addEventListener("hashchange", () => renderRoute());
  window.addEventListener("pagehide", () => { for (const view of liveViews.values()) view.leave({ keepalive: true }); });
  // Back from the back/forward cache: the streams were left on pagehide, so start again.
  window.addEventListener("pageshow", (e) => { if (e.persisted) for (const view of liveViews.values()) view.start(); });
  setInterval(() => app.view?.tick?.(), 30_000);
  const [session, health] = await Promise.allSettled([api("/api/auth/get-session"), api("/health")]);
  app.google = health.status === "fulfilled" && health.value?.configured === true;
  if (session.status === "fulfilled" && session.value?.user) startShell(session.value.user);
  else showSignIn(session.status === "rejected" ? session.reason.message : oauthError());
}

// Google sign-in comes back with ?error=… when it fails. Only the codes the server and
// Google send are worded; anything else in a link (text someone wrote to be shown here)
// is not repeated.
const OAUTH_ERRORS = {
  access_denied: "Google sign-in was cancelled.",
  account_not_linked: "Google sign-in failed: an account with this email exists, and Google has not verified the email, so it was not linked.",
  email_not_found: "Google sign-in failed: Google did not share an email address.",
  invalid_state: "Google sign-in failed: the sign-in expired or was started elsewhere. Try again.",
  no_code: "Google sign-in failed: Google sent no authorisation code. Try again.",
  token_exchange_failed: "Google sign-in failed: the server could not complete it with Google. Try again.",
};
function oauthError() {
  const error = new URLSearchParams(location.search).get("error");
  if (!error) return "";
  return Object.hasOwn(OAUTH_ERRORS, error) ? OAUTH_ERRORS[error] : "Google sign-in failed.";
}

// A 401 from the API: the session may have ended. Confirm before dropping the user out.
let checkingSession = false;
async function checkSignedOut() {
  if (!app.user || checkingSession) return;
  checkingSession = true;
  try {
    const session = await api("/api/auth/get-session");
    if (!session?.user && app.user) showSignIn("You have been signed out. Sign in again.");
  } catch { /* unreachable server: stay put, the views report it */ }
  finally { checkingSession = false; }
}

function teardownSession() {
  for (const view of [...liveViews.values()]) view.close({ end: false });
  app.view?.unmount?.();
  app.view = null;
  if (app.socket) {
    app.socket.removeAllListeners();
    app.socket.disconnect();
    app.socket = null;
  }
  app.socketConnectedOnce = false;
  app.user = null;
  app.shell = null;
  app.devices = new Map();
  app.devicesLoaded = false;
  app.lastMotion = new Map();
  app.motionLoading = new Set();
}

function showSignIn(message = "") {
  teardownSession();
  document.title = "Sign in · Watchpost";
  let mode = "sign-in";
  const alert = h("p", { role: "alert", class: "alert" }, message);
  const form = h("form", { class: "auth-form", novalidate: true, onsubmit: submit });
  const name = field("Name", h("input", { type: "text", autocomplete: "name", class: "input" }));
  const email = field("Email", h("input", { type: "email", autocomplete: "username", class: "input" }));
  const password = field("Password", h("input", { type: "password", class: "input" }));
  const passwordHint = h("p", { class: "hint", id: uid("hint") }, "At least 8 characters.");
  const submitBtn = h("button", { type: "submit", class: "btn btn-primary btn-block" });
  const switchBtn = h("button", { type: "button", class: "btn btn-link", onclick: () => { mode = mode === "sign-in" ? "sign-up" : "sign-in"; render(); switchBtn.focus(); } });
  const google = app.google
    ? [h("p", { class: "divider" }, h("span", null, "or")),
       h("button", { type: "button", class: "btn btn-block", onclick: signInWithGoogle }, "Continue with Google")]
    : [];

  function render() {
    const signUp = mode === "sign-up";
    password.input.autocomplete = signUp ? "new-password" : "current-password";
    submitBtn.textContent = signUp ? "Sign up" : "Sign in";
    switchBtn.textContent = signUp ? "I already have an account" : "Create an account";
    subtitle.textContent = signUp ? "Create your household account." : "Sign in to see your cameras.";
    if (signUp) password.input.setAttribute("aria-describedby", passwordHint.id);
    else password.input.removeAttribute("aria-describedby");
    form.replaceChildren(...(signUp ? [name.wrap] : []), email.wrap, password.wrap, ...(signUp ? [passwordHint] : []), submitBtn);
    alert.textContent = "";
  }

  async function submit(event) {
    event.preventDefault();
    const body = { email: email.input.value.trim(), password: password.input.value };
    if (mode === "sign-up") body.name = name.input.value.trim();
    if (!body.email || !body.password || (mode === "sign-up" && !body.name)) {
      alert.textContent = mode === "sign-up" ? "Enter your name, email and password." : "Enter your email and password.";
      return;
    }
    submitBtn.disabled = true;
    alert.textContent = "";
    try {
      const reply = await api(`/api/auth/${mode}/email`, { method: "POST", body });
      const session = await api("/api/auth/get-session");
      const user = session?.user ?? reply?.user;
      if (!session?.user) throw new Error("Signed in, but the browser did not keep the session. Are cookies blocked?");
      startShell(user);
    } catch (err) {
      alert.textContent = err.message;
      submitBtn.disabled = false;
    }
  }

  async function signInWithGoogle() {
    alert.textContent = "";
    try {
      const reply = await api("/api/auth/sign-in/social", { method: "POST", body: { provider: "google", callbackURL: `${location.origin}/` } });
      if (!reply?.url) throw new Error("Google sign-in is not available right now.");
      location.href = reply.url;
    } catch (err) {
      alert.textContent = err.message;
    }
  }

  const subtitle = h("p", { class: "muted" });
  render();
  alert.textContent = message;
  app.root.replaceChildren(h("main", { class: "auth" },
    h("div", { class: "auth-card" },
      h("div", { class: "auth-brand" }, icon("logo"), h("h1", null, "Watchpost")),
      subtitle, alert, form, ...google,
      h("p", { class: "auth-switch" }, switchBtn))));
  email.input.focus();
}

async function signOut() {
  for (const view of [...liveViews.values()]) view.close();
  try {
    await api("/api/auth/sign-out", { method: "POST", body: {} });
  } catch (err) {
    if (err.status !== 401) { app.view?.fail(err); return; }
  }
  showSignIn();
}

/* ------------------------------------------------------------------ shell and routing */

const NAV = [
  ["cameras", "Cameras", "camera"],
  ["timeline", "Timeline", "timeline"],
  ["recordings", "Recordings", "film"],
  ["devices", "Devices", "devices"],
];

function startShell(user) {
  teardownSession();
  app.user = user;
  const links = NAV.map(([route, label, iconName]) =>
    h("a", { href: `#/${route}`, class: "nav-link", "data-route": route }, icon(iconName), h("span", null, label)));
  const main = h("main", { id: "main", class: "view", tabindex: "-1" });
  const banner = h("div", { role: "status", class: "banner" });
  const toasts = h("div", { role: "status", "aria-live": "polite", class: "toasts" });
  const skip = h("a", { href: "#main", class: "skip-link", onclick: (e) => { e.preventDefault(); main.focus(); } }, "Skip to content");
  const who = user.name ? `${user.name}` : user.email;
  app.shell = { main, banner, toasts, links };
  app.root.replaceChildren(
    skip,
    h("header", { class: "topbar" },
      h("a", { href: "#/cameras", class: "brand", "aria-label": "Watchpost home" }, icon("logo"), h("span", null, "Watchpost")),
      h("nav", { "aria-label": "Main", class: "nav" }, h("ul", null, links.map((a) => h("li", null, a)))),
      h("div", { class: "account" },
        h("span", { class: "who", title: user.email ?? "" }, who, user.name && user.email ? h("span", { class: "who-email" }, user.email) : null),
        h("button", { type: "button", class: "btn btn-small", onclick: signOut }, "Sign out"))),
    banner, main, toasts);
  renderRoute({ focus: false });
  refreshDevices();
  connectSocket();
}

const VIEWS = {};

function currentRoute() {
  const match = location.hash.match(/^#\/?([a-z]+)/);
  if (match && VIEWS[match[1]]) return match[1];
  if (location.pathname === "/recordings") return "recordings";
  return "cameras";
}

function renderRoute({ focus = true } = {}) {
  if (!app.shell) return;
  const route = currentRoute();
  app.view?.unmount?.();
  const view = new VIEWS[route]();
  app.view = view;
  app.shell.main.replaceChildren(view.el);
  for (const link of app.shell.links) {
    if (link.dataset.route === route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${view.title} · Watchpost`;
  view.mount?.();
  if (focus) view.heading.focus();
}

function setBanner(text) {
  if (app.shell) app.shell.banner.textContent = text;
}

// A repeat of a toast still on screen counts up on it ("… ×3") instead of stacking: a
// camera reporting motion every second must not bury the page.
function toast(text) {
  if (!app.shell) return;
  const box = app.shell.toasts;
  let el = [...box.children].find((t) => t.dataset.text === text);
  if (el) {
    el.dataset.count = String(Number(el.dataset.count) + 1);
    el.textContent = `${text} ×${el.dataset.count}`;
    clearTimeout(Number(el.dataset.timer));
    box.append(el);
  } else {
    el = h("div", { class: "toast" }, text);
    el.dataset.text = text;
    el.dataset.count = "1";
    box.append(el);
    while (box.children.length > 4) box.firstElementChild.remove();
  }
  el.dataset.timer = String(setTimeout(() => el.remove(), TOAST_MS));
}

function systemNotify(title, body, route) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(title, { body, tag: title });
    n.onclick = () => { window.focus(); location.hash = route; n.close(); };
  } catch { /* some mobile browsers only notify through a service worker */ }
}

/* ------------------------------------------------------------------ devices and realtime */

// Presence heard over the socket, numbered in arrival order: a device list fetched before
// an event arrived must not undo it.
let presenceClock = 0;
const presenceHeard = new Map();

async function loadDevices() {
  const askedAt = presenceClock;
  const items = await fetchAll("/devices?limit=100");
  for (const device of items) {
    const heard = presenceHeard.get(device.id);
    if (heard && heard.at > askedAt) {
      device.online = heard.online;
      device.lastSeenAt = heard.lastSeenAt ?? device.lastSeenAt;
    }
  }
  app.devices = new Map(items.map((d) => [d.id, d]));
  app.devicesLoaded = true;
  devicesChanged();
}

function refreshDevices() {
  return loadDevices().catch((err) => app.view?.fail(err));
}

function devicesChanged() {
  for (const view of [...liveViews.values()]) view.syncDevice(app.devices.get(view.cameraId));
  app.view?.onDevices?.();
  loadLastMotion();
}

function putDevice(device) {
  app.devices.set(device.id, device);
  devicesChanged();
}

// The newest motion per camera, for "Last motion" on the tiles.
function loadLastMotion() {
  for (const camera of cameras()) {
    if (app.lastMotion.has(camera.id) || app.motionLoading.has(camera.id)) continue;
    app.motionLoading.add(camera.id);
    api(`/events?cameraDeviceId=${enc(camera.id)}&limit=1`)
      .then((page) => {
        if (!app.lastMotion.has(camera.id)) app.lastMotion.set(camera.id, page?.items?.[0]?.startedAt ?? null);
        app.view?.onDevices?.();
      })
      .catch((err) => app.view?.fail(err))
      .finally(() => app.motionLoading.delete(camera.id));
  }
}

function noteMotion(event) {
  const previous = app.lastMotion.get(event.cameraDeviceId);
  if (!previous || Date.parse(event.startedAt) >= Date.parse(previous)) app.lastMotion.set(event.cameraDeviceId, event.startedAt);
}

function onMotionDetected(event) {
  noteMotion(event);
  const text = `Motion on ${cameraName(event.cameraDeviceId)}`;
  toast(text);
  systemNotify(text, fmtDateTime(event.startedAt), "#/timeline");
  app.view?.onMotion?.(event);
}

function onPresence({ deviceId, online, lastSeenAt }) {
  presenceClock += 1;
  presenceHeard.set(deviceId, { at: presenceClock, online, lastSeenAt });
  const device = app.devices.get(deviceId);
  if (!device) { refreshDevices(); return; }
  app.devices.set(deviceId, { ...device, online, lastSeenAt: lastSeenAt ?? device.lastSeenAt });
  liveViews.get(deviceId)?.onPresence(online);
  devicesChanged();
}

function connectSocket() {
  if (typeof io !== "function") {
    app.view?.fail(new Error("Live updates are unavailable: the Socket.IO client did not load."));
    return;
  }
  const socket = io(location.origin, { withCredentials: true, transports: ["websocket", "polling"] });
  app.socket = socket;
  let lost = false;

  // The server refused the connection (not a network error): Socket.IO will not retry by
  // itself. Make sure we are still signed in, then try again.
  const retryLater = () => setTimeout(async () => {
    if (app.socket !== socket) return;
    const session = await api("/api/auth/get-session").catch(() => undefined);
    if (session === null) { showSignIn("You have been signed out. Sign in again."); return; }
    if (app.socket === socket && !socket.connected) socket.connect();
  }, 3000);

  socket.on("connect", () => {
    setBanner("");
    if (lost) {
      lost = false;
      app.lastMotion = new Map();
      refreshDevices();
      for (const view of liveViews.values()) view.onSocketReconnect();
      app.view?.onReconnect?.();
    }
    app.socketConnectedOnce = true;
  });
  socket.on("disconnect", (reason) => {
    if (app.socket !== socket) return;
    lost = true;
    app.socketLostAt = Date.now();
    for (const view of liveViews.values()) view.onSocketLost();
    setBanner("Connection lost — reconnecting…");
    if (reason === "io server disconnect") retryLater();
  });
  socket.on("connect_error", () => {
    if (app.socket !== socket) return;
    if (app.socketConnectedOnce) { lost = true; setBanner("Connection lost — reconnecting…"); }
    if (!socket.active) retryLater();
  });
  socket.on("device:presence", onPresence);
  socket.on("motion:detected", onMotionDetected);
  socket.on("motion:ended", (event) => app.view?.onMotionEnded?.(event));
  for (const type of ["stream:requested", "stream:started", "stream:ended"]) {
    socket.on(type, (session) => { for (const view of [...liveViews.values()]) view.onStreamEvent(type, session); });
  }
  for (const type of ["recording:started", "recording:completed"]) {
    socket.on(type, (recording) => app.view?.onRecording?.(recording));
  }
}

/* ------------------------------------------------------------------ live view (WHEP) */

const socketLostRecently = () => !app.socket?.connected || Date.now() - app.socketLostAt < OUTAGE_WINDOW_MS;

const isTransient = (err) => (err instanceof ApiError
  ? err.status === 0 || err.status >= 500 || err.status === 408 || err.status === 429
    || err.code === "STREAM_NOT_ACTIVE" || (err.whep && (err.status === 404 || err.status === 409))
  : err instanceof TypeError);

// The server builds whepUrl from its configured public URL, which may name another host
// than the one this page was loaded from (a LAN address, localhost…). The page may only
// connect to its own origin, and WHEP is served by this same server: keep the path.
function sameOriginWhep(whepUrl) {
  const url = new URL(whepUrl, location.origin);
  return url.origin !== location.origin && url.pathname.startsWith("/whep/")
    ? `${location.origin}${url.pathname}${url.search}`
    : url.href;
}

function leaveWhep({ url, token }, keepalive = false) {
  fetch(url, { method: "DELETE", headers: { authorization: `Bearer ${token}` }, keepalive }).catch(() => {});
}

function openLive(cameraId) {
  const existing = liveViews.get(cameraId);
  if (existing) { existing.focus(); return; }
  const camera = app.devices.get(cameraId);
  if (!camera) return;
  const view = new LiveView(camera);
  liveViews.set(cameraId, view);
  liveGrid.prepend(view.el);
  liveArea.hidden = false;
  app.view?.onDevices?.();
  view.start();
  view.focus();
}

class LiveView {
  constructor(camera) {
    this.cameraId = camera.id;
    this.session = null;
    this.earlyStart = null; // stream:started that overtook our own request's reply
    this.pc = null;
    this.whep = null; // the WHEP resource to DELETE when leaving
    this.gen = 0; // bumped on every (re)start so stale async steps give up
    this.phase = "idle"; // requesting | waiting | subscribing | live | retrying | stopped
    this.reconnecting = false;
    this.retries = 0;
    this.timers = { retry: 0, loss: 0, wait: 0, stall: 0 };
    this.closed = false;
    this.build();
    this.setName(camera.name);
  }

  build() {
    this.video = h("video", { class: "live-video", autoplay: true, playsinline: true, muted: true });
    this.video.muted = true;
    this.stateEl = h("p", { role: "status", class: "live-state" }, "Connecting…");
    this.audioIcon = icon("soundOff");
    this.audioBtn = h("button", { type: "button", class: "btn btn-small", "aria-pressed": "false", onclick: () => this.toggleAudio() },
      this.audioIcon, h("span", null, "Audio"));
    this.fullBtn = h("button", { type: "button", class: "btn btn-small", "aria-pressed": "false", onclick: () => this.toggleFullscreen() },
      icon("fullscreen"), h("span", null, "Full screen"));
    this.againBtn = h("button", { type: "button", class: "btn btn-small btn-primary", hidden: true, onclick: () => this.start() },
      icon("play"), h("span", null, "Watch again"));
    this.closeBtn = h("button", { type: "button", class: "btn btn-icon", onclick: () => this.close() }, icon("close"));
    this.title = h("h3", { class: "live-title" });
    this.el = h("section", { role: "region", class: "live", tabindex: "-1", "data-state": "pending" },
      h("div", { class: "live-head" }, this.title, this.closeBtn),
      h("div", { class: "live-stage" }, this.video),
      h("div", { class: "live-foot" }, this.stateEl,
        h("div", { class: "live-controls" }, this.againBtn, this.audioBtn, this.fullBtn)));
    this.el.addEventListener("fullscreenchange", () => {
      this.fullBtn.setAttribute("aria-pressed", String(document.fullscreenElement === this.el));
    });
  }

  setName(name) {
    this.name = name;
    this.title.textContent = name;
    this.el.setAttribute("aria-label", `Live: ${name}`);
    this.video.setAttribute("aria-label", `Live video from ${name}`);
    this.closeBtn.setAttribute("aria-label", `Close live view of ${name}`);
  }

  setState(text, kind) {
    this.stateEl.textContent = text;
    this.el.dataset.state = kind;
  }

  focus() {
    this.el.scrollIntoView({ block: "nearest" });
    this.el.focus({ preventScroll: true });
  }

  resume() {
    if (this.video.srcObject) this.video.play().catch(() => {});
  }

  clearTimers() {
    // clearTimeout also clears intervals (one pool of ids).
    for (const key of Object.keys(this.timers)) { clearTimeout(this.timers[key]); this.timers[key] = 0; }
  }

  // Fresh start from the user (Watch, Watch again).
  start() {
    this.gen += 1;
    this.clearTimers();
    this.stopMedia();
    this.retries = 0;
    this.reconnecting = false;
    this.againBtn.hidden = true;
    const camera = app.devices.get(this.cameraId);
    if (camera?.status === "disabled") { this.stop("Camera disabled"); return; }
    if (camera && camera.online === false) { this.stop("Camera is offline"); return; }
    this.attempt();
  }

  async attempt() {
    const gen = ++this.gen;
    this.clearTimers();
    this.stopMedia();
    this.phase = "requesting";
    this.earlyStart = null;
    this.setState(this.reconnecting ? "Reconnecting…" : "Connecting…", "pending");
    try {
      const session = await api("/streams/request", { method: "POST", body: { cameraDeviceId: this.cameraId } });
      if (gen !== this.gen) return;
      this.session = session;
      if (session.status === "streaming" || this.earlyStart?.id === session.id) {
        await this.subscribe(gen);
      } else if (session.status === "requested") {
        this.phase = "waiting";
        if (!this.reconnecting) this.setState("Waiting for the camera…", "pending");
        // Safety net should the socket miss the camera's answer.
        this.timers.wait = setTimeout(() => {
          if (gen === this.gen && this.phase === "waiting") this.stop("The camera did not answer");
        }, 60_000);
      } else {
        this.onSessionEnded(session);
      }
    } catch (err) {
      if (gen === this.gen) this.onError(err);
    }
  }

  async subscribe(gen) {
    this.phase = "subscribing";
    clearTimeout(this.timers.wait);
    const creds = await api(`/streams/${enc(this.session.id)}/subscribe-credentials`);
    if (gen !== this.gen) return;
    const pc = new RTCPeerConnection({ iceServers: creds.iceServers ?? [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      // Remote tracks start muted and unmute when the first packets arrive.
      event.track.addEventListener("unmute", () => this.goLive(pc));
    };
    pc.onconnectionstatechange = () => this.onPeerState(pc);
    this.video.srcObject = stream;
    await pc.setLocalDescription(await pc.createOffer());
    const whepUrl = sameOriginWhep(creds.whepUrl);
    const res = await fetch(whepUrl, {
      method: "POST",
      headers: { "content-type": "application/sdp", authorization: `Bearer ${creds.token}` },
      body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    const location_ = res.headers.get("location");
    const resource = location_ ? { url: new URL(location_, whepUrl).href, token: creds.token } : null;
    if (gen !== this.gen || pc !== this.pc) {
      if (res.status === 201 && resource) leaveWhep(resource);
      return;
    }
    if (res.status !== 201) {
      let body = answer;
      try { body = JSON.parse(answer); } catch { /* plain text */ }
      const err = new ApiError(errorMessage(body, res.status), res.status, body?.code ?? "");
      err.whep = true;
      throw err;
    }
    this.whep = resource;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    this.video.play().catch(() => {});
  }

  onPeerState(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this.timers.loss);
      this.timers.loss = 0;
      this.watchForStall(pc);
      this.goLive(pc);
    } else if ((state === "disconnected" || state === "failed") && !this.timers.loss) {
      // Brief ICE hiccups recover by themselves; only a loss that lasts gets a new connection.
      this.timers.loss = setTimeout(() => {
        this.timers.loss = 0;
        if (pc === this.pc && pc.connectionState !== "connected") this.reconnect();
      }, 3000);
    }
  }

  // "Live" once connected and media arrives (`flowing`: seen in the stats).
  goLive(pc, flowing = false) {
    if (pc !== this.pc || this.phase === "live" || pc.connectionState !== "connected") return;
    if (!flowing && !pc.getReceivers().some((r) => r.track && !r.track.muted)) return;
    this.phase = "live";
    this.retries = 0;
    this.reconnecting = false;
    this.setState("Live", "live");
  }

  // ICE can take many seconds to notice a dead server, and a connection can be up with no
  // media behind it: media that does not arrive (or stops) is the quicker signal.
  watchForStall(pc) {
    clearInterval(this.timers.stall);
    let lastBytes = 0;
    let lastChange = Date.now();
    this.timers.stall = setInterval(async () => {
      const stats = await pc.getStats().catch(() => null);
      if (!stats || pc !== this.pc) return;
      let bytes = 0;
      stats.forEach((s) => { if (s.type === "inbound-rtp") bytes += s.bytesReceived ?? 0; });
      if (bytes > lastBytes) {
        lastBytes = bytes;
        lastChange = Date.now();
        this.goLive(pc, true);
      } else if (Date.now() - lastChange > (lastBytes ? STALL_MS : FIRST_MEDIA_MS)) {
        this.reconnect();
      }
    }, 1000);
  }

  reconnect() {
    if (this.closed || this.phase === "stopped") return;
    this.againBtn.hidden = true;
    this.gen += 1;
    this.clearTimers();
    this.stopMedia();
    this.reconnecting = true;
    this.phase = "retrying";
    this.setState("Reconnecting…", "pending");
    const delay = RECONNECT_DELAYS_MS[Math.min(this.retries, RECONNECT_DELAYS_MS.length - 1)];
    this.retries += 1;
    this.timers.retry = setTimeout(() => this.attempt(), delay);
  }

  onError(err) {
    if (this.closed) return;
    if (err?.code === "CAMERA_OFFLINE") {
      // Mid-reconnect (the server restarted and the camera has not dialled back yet): keep
      // trying; the camera's presence event brings the next attempt forward.
      if (this.reconnecting) this.reconnect();
      else this.stop("Camera is offline");
      return;
    }
    if (err?.code === "DEVICE_DISABLED") { this.stop("Camera disabled"); return; }
    if (isTransient(err)) { this.reconnect(); return; }
    this.stop(`Cannot play: ${err?.message ?? err}`);
  }

  onStreamEvent(type, session) {
    if (this.closed || session.cameraDeviceId !== this.cameraId) return;
    const mine = this.session?.id === session.id;
    if (type === "stream:started") {
      if (this.phase === "requesting") { this.earlyStart = session; return; }
      if (!mine) return;
      this.session = session;
      if (this.phase === "waiting") {
        const gen = this.gen;
        this.subscribe(gen).catch((err) => { if (gen === this.gen) this.onError(err); });
      }
    } else if (type === "stream:ended" && mine) {
      this.session = session;
      this.onSessionEnded(session);
    }
  }

  onSessionEnded(session) {
    // Already asking for a new session: the old one ending is expected.
    if (this.closed || ["stopped", "requesting", "retrying"].includes(this.phase)) return;
    const reason = session.endReason ?? "";
    if (reason === "device_disabled") this.stop("Camera disabled");
    else if (session.status === "expired" || reason === "not_accepted") this.stop("The camera did not answer");
    else if (/refus|reject|declin/.test(reason)) this.stop("The camera refused the stream");
    else if (reason === "ended_by_camera") this.stop(session.startedAt ? "Stream ended" : "The camera refused the stream");
    else if (reason === "publisher_left") this.stopUnlessOutage("Stream ended");
    else if (reason.includes("deleted")) this.stop("Stream ended");
    // Ended by someone else (another viewer, the recorder finishing): start a session of our own.
    else this.reconnect();
  }

  syncDevice(device) {
    if (this.closed) return;
    if (!device) { this.close({ end: false }); return; }
    if (device.name !== this.name) this.setName(device.name);
    if (device.status === "disabled" && this.stateEl.textContent !== "Camera disabled") this.stop("Camera disabled");
  }

  onPresence(online) {
    if (this.closed) return;
    // While reconnecting the camera may well be away for a moment; the loop keeps going.
    if (!online && this.phase !== "stopped" && !this.reconnecting) this.stopUnlessOutage("Camera is offline");
    // The publisher dropping out usually arrives just before the camera's own disconnect.
    else if (!online && this.stateEl.textContent === "Stream ended") this.setState("Camera is offline", "problem");
    else if (online && this.phase === "retrying") { this.clearTimers(); this.attempt(); }
  }

  // A server going down first tells us the publisher left or the camera went offline, then
  // drops our socket too. That is an outage to ride out, not the end of the stream.
  stopUnlessOutage(text) {
    if (this.reconnecting || socketLostRecently()) { this.reconnect(); return; }
    this.stop(text);
    this.softStoppedAt = Date.now();
  }

  onSocketLost() {
    if (!this.closed && this.phase === "stopped" && Date.now() - (this.softStoppedAt ?? 0) < OUTAGE_WINDOW_MS) {
      this.phase = "retrying";
      this.againBtn.hidden = true;
      this.reconnect();
    }
  }

  // After the socket was down we may have missed stream events: check the session still runs.
  async onSocketReconnect() {
    if (this.closed || this.phase === "stopped") return;
    if (this.phase === "retrying") { this.clearTimers(); this.attempt(); return; }
    if (!this.session || this.phase === "requesting") return;
    const gen = this.gen;
    try {
      await api(`/streams/${enc(this.session.id)}/subscribe-credentials`);
      if (gen !== this.gen) return;
      if (this.phase === "waiting") {
        this.subscribe(gen).catch((err) => { if (gen === this.gen) this.onError(err); });
      } else if (this.pc?.connectionState !== "connected") {
        this.reconnect();
      }
    } catch (err) {
      if (gen !== this.gen) return;
      if (this.phase === "waiting") this.attempt(); // still requested, or ended unseen: ask again
      else if (err.code === "STREAM_NOT_ACTIVE" || isTransient(err)) this.reconnect();
      else this.onError(err);
    }
  }

  stop(text) {
    this.softStoppedAt = 0;
    this.gen += 1;
    this.clearTimers();
    this.stopMedia();
    this.phase = "stopped";
    this.reconnecting = false;
    this.setState(text, text === "Stream ended" ? "ended" : "problem");
    this.againBtn.hidden = false;
  }

  stopMedia() {
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.ontrack = null;
      this.pc.close();
      this.pc = null;
    }
    if (this.whep) { leaveWhep(this.whep); this.whep = null; }
    this.video.srcObject = null;
  }

  // Only end sessions this page asked for; a phone's or the recorder's stream is not ours.
  ownsSession() {
    const s = this.session;
    return Boolean(s && (s.status === "requested" || s.status === "streaming") && s.reason === "view"
      && s.requesterDeviceId == null && s.requestedByUserId === app.user?.id);
  }

  leave({ keepalive = false, end = true } = {}) {
    if (this.whep) { leaveWhep(this.whep, keepalive); this.whep = null; }
    if (end && this.ownsSession()) {
      api(`/streams/${enc(this.session.id)}/end`, { method: "POST", body: {}, keepalive }).catch(() => {});
    }
  }

  close({ end = true } = {}) {
    if (this.closed) return;
    this.leave({ end });
    this.closed = true;
    this.gen += 1;
    this.clearTimers();
    this.stopMedia();
    if (document.fullscreenElement === this.el) document.exitFullscreen().catch(() => {});
    this.el.remove();
    liveViews.delete(this.cameraId);
    liveArea.hidden = liveViews.size === 0;
    app.view?.onDevices?.();
  }

  toggleAudio() {
    this.video.muted = !this.video.muted;
    this.audioBtn.setAttribute("aria-pressed", String(!this.video.muted));
    const next = icon(this.video.muted ? "soundOff" : "soundOn");
    this.audioIcon.replaceWith(next);
    this.audioIcon = next;
    if (!this.video.muted) this.video.play().catch(() => {});
  }

  toggleFullscreen() {
    if (document.fullscreenElement === this.el) { document.exitFullscreen().catch(() => {}); return; }
    if (this.el.requestFullscreen) this.el.requestFullscreen().catch((err) => app.view?.fail(new Error(`Full screen is not available: ${err.message}`)));
    else this.video.webkitEnterFullscreen?.();
  }
}

/* ------------------------------------------------------------------ recording playback (MSE) */

const VIDEO_CODECS = {
  vp8: ["vp8"],
  vp9: ["vp9", "vp09.00.10.08"],
  h264: ["avc1.42E01F", "avc1.4D401F", "avc1.640028"],
  av1: ["av01.0.04M.08"],
};

function codecKey(videoCodec) {
  const v = (videoCodec ?? "").toLowerCase();
  if (v.includes("vp8")) return "vp8";
  if (v.includes("vp9") || v.includes("vp09")) return "vp9";
  if (v.includes("264") || v.includes("avc")) return "h264";
  if (v.includes("av1") || v.includes("av01")) return "av1";
  return null;
}

function mimeFor(contentType, videoCodec, audioCodec) {
  const video = VIDEO_CODECS[codecKey(videoCodec)] ?? (contentType === "video/mp4" ? VIDEO_CODECS.h264 : VIDEO_CODECS.vp8);
  const audio = audioCodec ? (audioCodec.toLowerCase().includes("aac") ? "mp4a.40.2" : "opus") : null;
  const candidates = video.map((v) => `${contentType}; codecs="${audio ? `${v}, ${audio}` : v}"`);
  return candidates.find((mime) => window.MediaSource?.isTypeSupported(mime)) ?? null;
}

// Resolves on `event`, rejects on the target's "error" or when `signal` aborts.
function waitFor(target, event, signal) {
  return new Promise((resolve, reject) => {
    const done = (fn, value) => {
      target.removeEventListener(event, ok);
      target.removeEventListener("error", bad);
      signal?.removeEventListener("abort", aborted);
      fn(value);
    };
    const ok = (e) => done(resolve, e);
    const bad = () => done(reject, new Error("the browser could not decode this recording"));
    const aborted = () => done(reject, signal.reason);
    target.addEventListener(event, ok);
    target.addEventListener("error", bad);
    signal?.addEventListener("abort", aborted);
  });
}

// Plays a recording's uploaded segments back to back. Each segment is a standalone
// WebM/MP4 file; appended in `sequence` mode they form one continuous timeline.
class SegmentPlayer {
  constructor(video, onInfo = () => {}) {
    this.video = video;
    this.onInfo = onInfo;
    this.abort = new AbortController();
  }

  stop() {
    this.abort.abort(new DOMException("stopped", "AbortError"));
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
  }

  // fromMs/toMs (epoch ms) pick only the segments of that window, e.g. one motion event.
  async play(recordingId, { fromMs = null, toMs = null } = {}) {
    const { signal } = this.abort;
    let detail = await api(`/recordings/${enc(recordingId)}`, { signal });
    const uploaded = () => (detail.segments ?? []).filter((s) => s.uploadedAt).sort((a, b) => a.seq - b.seq);
    // A recording that has just started has nothing uploaded yet: wait for its first segment.
    for (let waited = 0; !uploaded().length && detail.status === "recording" && waited < 120; waited += 2) {
      this.onInfo("Waiting for the first part of the recording to be uploaded…");
      await sleep(2000, signal);
      detail = await api(`/recordings/${enc(recordingId)}`, { signal });
    }
    let segments = uploaded();
    if (!segments.length) {
      throw new Error(detail.status === "recording"
        ? "nothing of this recording has been uploaded yet; try again in a minute"
        : "no part of this recording was uploaded");
    }
    let seekTo = 0;
    if (fromMs != null) {
      const windowed = segments.filter((s) => {
        const start = Date.parse(s.startedAt);
        return start + (s.durationMs ?? 0) >= fromMs && (toMs == null || start <= toMs);
      });
      if (windowed.length) {
        segments = windowed;
        seekTo = Math.max(0, (fromMs - Date.parse(segments[0].startedAt)) / 1000);
      }
    }
    const mime = mimeFor(segments[0].contentType, detail.videoCodec, detail.audioCodec);
    if (mime) await this.playSource({ recordingId, status: detail.status, segments, mime, seekTo, toMs, signal });
    else await this.playOneByOne(recordingId, segments, signal);
  }

  segmentUrl(recordingId, seq, signal) {
    return api(`/recordings/${enc(recordingId)}/segments/${seq}/download-url`, { signal }).then((r) => r.downloadUrl);
  }

  async download(recordingId, segment, signal) {
    const res = await fetch(await this.segmentUrl(recordingId, segment.seq, signal), { signal });
    if (!res.ok) throw new Error(`a segment could not be downloaded (HTTP ${res.status})`);
    return res.arrayBuffer();
  }

  async playSource({ recordingId, status, segments, mime, seekTo, toMs, signal }) {
    const source = new MediaSource();
    const url = URL.createObjectURL(source);
    this.video.src = url;
    await waitFor(source, "sourceopen", signal);
    URL.revokeObjectURL(url);
    const buffer = source.addSourceBuffer(mime);
    buffer.mode = "sequence";
    // Download the next segment while the current one is appended.
    let next = this.download(recordingId, segments[0], signal);
    for (let i = 0; i < segments.length; i += 1) {
      const bytes = await next;
      next = i + 1 < segments.length ? this.download(recordingId, segments[i + 1], signal) : null;
      next?.catch(() => {});
      await this.makeRoom(buffer, signal);
      await this.append(buffer, bytes, signal);
      if (i === 0) {
        if (seekTo > 0.5) this.video.currentTime = seekTo;
        this.video.play().catch(() => {});
      }
      this.onInfo(`Segment ${i + 1} of ${segments.length} loaded`);
    }
    const count = await this.follow({ recordingId, status, lastSeq: segments.at(-1).seq, toMs, buffer, signal });
    if (source.readyState === "open" && !buffer.updating) source.endOfStream();
    const total = segments.length + count;
    this.onInfo(`${total} segment${total === 1 ? "" : "s"}`);
  }

  // A recording still in progress: append its segments as they are uploaded, until it
  // completes (or the wanted window is covered).
  async follow({ recordingId, status, lastSeq, toMs, buffer, signal }) {
    let appended = 0;
    const until = Date.now() + 15 * 60_000;
    while (status === "recording" && Date.now() < until) {
      await sleep(2000, signal);
      const detail = await api(`/recordings/${enc(recordingId)}`, { signal });
      status = detail.status;
      const fresh = (detail.segments ?? [])
        .filter((s) => s.uploadedAt && s.seq > lastSeq && (toMs == null || Date.parse(s.startedAt) <= toMs))
        .sort((a, b) => a.seq - b.seq);
      for (const segment of fresh) {
        const bytes = await this.download(recordingId, segment, signal);
        await this.makeRoom(buffer, signal);
        await this.append(buffer, bytes, signal);
        lastSeq = segment.seq;
        appended += 1;
        this.onInfo("Still recording: new segments are added as they are uploaded");
      }
      const covered = toMs != null && (detail.segments ?? []).some((s) => s.uploadedAt && Date.parse(s.startedAt) > toMs);
      if (covered || (toMs != null && Date.now() > toMs + 60_000 && !fresh.length)) break;
    }
    return appended;
  }

  async append(buffer, bytes, signal) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        buffer.appendBuffer(bytes);
        await waitFor(buffer, "updateend", signal);
        return;
      } catch (err) {
        if (err?.name !== "QuotaExceededError" || attempt > 30) throw err;
        await this.evict(buffer, signal);
        await sleep(1000, signal);
      }
    }
  }

  // Keeps at most ~90 s buffered ahead of the playhead, so long recordings fit in memory.
  async makeRoom(buffer, signal) {
    for (;;) {
      const ranges = buffer.buffered;
      if (!ranges.length || ranges.end(ranges.length - 1) - this.video.currentTime < 90) return;
      await this.evict(buffer, signal);
      await sleep(1000, signal);
    }
  }

  async evict(buffer, signal) {
    const ranges = buffer.buffered;
    const keepFrom = this.video.currentTime - 10;
    if (ranges.length && keepFrom - ranges.start(0) > 1) {
      buffer.remove(ranges.start(0), keepFrom);
      await waitFor(buffer, "updateend", signal);
    }
  }

  // Without a usable MediaSource: one file after another.
  async playOneByOne(recordingId, segments, signal) {
    for (const [i, segment] of segments.entries()) {
      this.video.src = await this.segmentUrl(recordingId, segment.seq, signal);
      this.video.play().catch(() => {});
      this.onInfo(`Segment ${i + 1} of ${segments.length}`);
      await waitFor(this.video, "ended", signal);
    }
  }
}

/* ------------------------------------------------------------------ views */

class View {
  constructor(title) {
    this.title = title;
    this.heading = h("h1", { tabindex: "-1" }, title);
    this.alert = h("p", { role: "alert", class: "alert" });
    this.el = h("div", { class: `page page-${title.toLowerCase().replaceAll(" ", "-")}` });
  }

  fail(err) {
    if (err?.name === "AbortError" || (err?.status === 401 && !app.user)) return;
    this.alert.textContent = err?.message ?? String(err);
  }

  clearAlert() {
    this.alert.textContent = "";
  }
}

// The Camera select shared by the timeline and recordings views.
function cameraOptions(withAll) {
  return [...(withAll ? [["", "All cameras"]] : []), ...cameras().map((c) => [c.id, c.name])];
}

class CamerasView extends View {
  constructor() {
    super("Cameras");
    this.tiles = new Map();
    this.grid = h("div", { class: "camera-grid" });
    this.empty = h("p", { class: "empty", hidden: true }, "No cameras yet — add one under Devices.");
    this.loading = h("p", { class: "muted" }, "Loading cameras…");
    const canAsk = "Notification" in window && Notification.permission === "default";
    this.notifyBtn = canAsk
      ? h("button", { type: "button", class: "btn btn-small", onclick: () => this.askNotifications() }, icon("bell"), h("span", null, "Turn on notifications"))
      : null;
    this.el.append(h("div", { class: "page-head" }, this.heading, this.notifyBtn), this.alert, liveArea, this.loading, this.empty, this.grid);
  }

  mount() {
    this.render();
    for (const view of liveViews.values()) view.resume();
    if (app.devicesLoaded) refreshDevices();
  }

  onDevices() { this.render(); }
  onMotion() { this.render(); }
  tick() { this.render(); }
  onReconnect() { this.render(); }

  async askNotifications() {
    const result = await Notification.requestPermission().catch(() => "denied");
    this.notifyBtn?.remove();
    if (result !== "granted") this.fail(new Error("Notifications are blocked; motion still shows here while the page is open."));
  }

  render() {
    const list = cameras();
    this.loading.hidden = app.devicesLoaded;
    this.empty.hidden = !app.devicesLoaded || list.length > 0;
    for (const [id, tile] of this.tiles) {
      if (!app.devices.has(id)) { tile.el.remove(); this.tiles.delete(id); }
    }
    list.forEach((camera, index) => {
      let tile = this.tiles.get(camera.id);
      if (!tile) { tile = this.buildTile(camera.id); this.tiles.set(camera.id, tile); }
      this.updateTile(tile, camera);
      if (this.grid.children[index] !== tile.el) this.grid.insertBefore(tile.el, this.grid.children[index] ?? null);
    });
  }

  buildTile(id) {
    const tile = {
      name: h("h2", { class: "tile-name" }),
      presence: h("span", { class: "presence" }),
      motion: h("p", { class: "tile-motion" }),
      watch: h("button", { type: "button", class: "btn btn-primary", onclick: () => openLive(id) }, icon("play"), h("span", null, "Watch")),
      live: h("span", { class: "tile-live", hidden: true }, "Watching"),
    };
    const thumb = h("div", { class: "tile-thumb", "aria-hidden": "true", onclick: () => openLive(id) }, icon("camera"), tile.live);
    tile.el = h("article", { class: "tile" }, thumb,
      h("div", { class: "tile-body" }, h("div", { class: "tile-head" }, tile.name, tile.presence), tile.motion, tile.watch));
    return tile;
  }

  updateTile(tile, camera) {
    tile.el.setAttribute("aria-label", camera.name);
    tile.name.textContent = camera.name;
    const presence = presenceLabel(camera);
    tile.presence.textContent = presence;
    tile.presence.dataset.state = presence.toLowerCase();
    const last = app.lastMotion.get(camera.id);
    if (last) {
      tile.motion.textContent = `Last motion: ${fmtRelative(last)}`;
      tile.motion.title = fmtDateTime(last);
    } else {
      tile.motion.textContent = last === null ? "No motion yet" : "Checking for motion…";
      tile.motion.removeAttribute("title");
    }
    tile.watch.setAttribute("aria-label", `Watch ${camera.name}`);
    tile.live.hidden = !liveViews.has(camera.id);
  }
}

class TimelineView extends View {
  static filter = "";

  constructor() {
    super("Motion timeline");
    this.entries = new Map();
    this.gen = 0;
    this.select = h("select", { class: "input", onchange: () => { TimelineView.filter = this.select.value; this.reload(); } });
    this.list = h("ol", { class: "events", "aria-label": "Motion events" });
    this.empty = h("p", { class: "empty", hidden: true }, "No motion events yet.");
    this.loadingEl = h("p", { class: "muted", hidden: true }, "Loading…");
    this.more = h("button", { type: "button", class: "btn", hidden: true, onclick: () => { this.paused = false; this.loadMore(); } }, "Load more");
    this.sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
    this.el.append(
      h("div", { class: "page-head" }, this.heading),
      h("div", { class: "toolbar" }, field("Camera", this.select).wrap),
      this.alert, this.list, this.empty, this.loadingEl, this.sentinel, h("div", { class: "more" }, this.more));
    this.fillSelect();
  }

  fillSelect() {
    setOptions(this.select, cameraOptions(true), TimelineView.filter);
    if (app.devicesLoaded) TimelineView.filter = this.select.value;
  }

  mount() {
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }, { rootMargin: "300px" });
    this.observer.observe(this.sentinel);
    this.reload();
  }

  unmount() {
    this.observer?.disconnect();
    this.gen += 1;
    for (const entry of this.entries.values()) entry.player?.stop();
  }

  onDevices() {
    const before = this.select.value;
    this.fillSelect();
    if (this.select.value !== before) { this.reload(); return; }
    for (const entry of this.entries.values()) this.updateEntry(entry, entry.event);
  }

  onReconnect() { this.reload(); }

  reload() {
    this.gen += 1;
    for (const entry of this.entries.values()) entry.player?.stop();
    this.entries.clear();
    this.list.replaceChildren();
    this.cursor = null;
    this.done = false;
    this.loading = false;
    this.paused = false;
    this.clearAlert();
    this.loadMore();
  }

  async loadMore() {
    if (this.loading || this.done || this.paused) return;
    this.loading = true;
    const gen = this.gen;
    this.loadingEl.hidden = false;
    this.more.hidden = true;
    try {
      const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (TimelineView.filter) params.set("cameraDeviceId", TimelineView.filter);
      if (this.cursor) params.set("cursor", this.cursor);
      const page = await api(`/events?${params}`);
      if (gen !== this.gen) return;
      for (const event of page?.items ?? []) this.upsert(event, "append");
      this.cursor = page?.nextCursor ?? null;
      this.done = !this.cursor;
    } catch (err) {
      if (gen !== this.gen) return;
      this.paused = true; // no retry loop from the observer; "Load more" tries again
      this.fail(err);
    } finally {
      if (gen === this.gen) {
        this.loading = false;
        this.loadingEl.hidden = true;
        this.more.hidden = this.done;
        this.empty.hidden = !this.done || this.entries.size > 0;
      }
    }
    // The observer only fires on change: keep going while the sentinel is still on screen.
    if (gen === this.gen && !this.done && !this.paused && this.sentinel.getBoundingClientRect().top < innerHeight + 300) this.loadMore();
  }

  matches(event) {
    return !TimelineView.filter || event.cameraDeviceId === TimelineView.filter;
  }

  upsert(event, where) {
    const existing = this.entries.get(event.id);
    if (existing) { this.updateEntry(existing, event); return existing; }
    const entry = this.buildEntry(event);
    this.entries.set(event.id, entry);
    if (where === "prepend") this.list.prepend(entry.li);
    else this.list.append(entry.li);
    this.empty.hidden = true;
    return entry;
  }

  onMotion(event) {
    if (!this.matches(event)) return;
    const isNew = !this.entries.has(event.id);
    const entry = this.upsert(event, "prepend");
    if (isNew) entry.li.classList.add("is-new");
  }

  onMotionEnded(event) {
    const entry = this.entries.get(event.id);
    if (entry) this.updateEntry(entry, event);
  }

  // A recording started or finished: events it covers may have gained their clip.
  onRecording(recording) {
    const start = Date.parse(recording.startedAt);
    const end = recording.endedAt ? Date.parse(recording.endedAt) : Date.now();
    const stale = [...this.entries.values()].some(({ event }) => event.cameraDeviceId === recording.cameraDeviceId
      && !event.recordingIds?.includes(recording.id)
      && Date.parse(event.startedAt) <= end && (event.endedAt ? Date.parse(event.endedAt) : Date.now()) >= start);
    if (!stale) return;
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(async () => {
      try {
        const page = await api(`/events?cameraDeviceId=${enc(recording.cameraDeviceId)}&limit=${PAGE_SIZE}`);
        for (const event of page?.items ?? []) {
          const entry = this.entries.get(event.id);
          if (entry) this.updateEntry(entry, event);
        }
      } catch (err) { this.fail(err); }
    }, 500);
  }

  buildEntry(event) {
    const entry = {
      event,
      camera: h("span", { class: "event-camera" }),
      when: h("time", { class: "event-time" }),
      meta: h("p", { class: "event-meta" }),
      actions: h("div", { class: "event-actions" }),
      clip: h("div", { class: "clip" }),
      player: null,
    };
    entry.li = h("li", { class: "event" },
      h("div", { class: "event-row" },
        h("span", { class: "event-dot", "aria-hidden": "true" }),
        h("div", { class: "event-info" }, h("p", { class: "event-title" }, entry.camera, entry.when), entry.meta),
        entry.actions),
      entry.clip);
    this.updateEntry(entry, event);
    return entry;
  }

  updateEntry(entry, event) {
    entry.event = event;
    const name = cameraName(event.cameraDeviceId);
    entry.camera.textContent = name;
    entry.when.textContent = fmtDateTime(event.startedAt);
    entry.when.dateTime = event.startedAt;
    const duration = event.endedAt ? fmtDuration(Date.parse(event.endedAt) - Date.parse(event.startedAt)) : "ongoing";
    const parts = [`Duration: ${duration}`];
    if (event.score != null) parts.push(`Score: ${scoreFormat.format(event.score)}`);
    entry.meta.textContent = parts.join(" · ");
    entry.li.classList.toggle("is-ongoing", !event.endedAt);
    const hasClip = (event.recordingIds ?? []).length > 0;
    if (hasClip && !entry.playBtn) {
      entry.playBtn = h("button", { type: "button", class: "btn btn-small", onclick: () => this.playClip(entry) }, icon("play"), h("span", null, "Play clip"));
      entry.actions.append(entry.playBtn);
    }
    entry.playBtn?.setAttribute("aria-label", `Play clip of motion on ${name} at ${fmtDateTime(event.startedAt)}`);
    if (!hasClip && entry.playBtn) { entry.playBtn.remove(); entry.playBtn = null; }
  }

  async playClip(entry) {
    entry.player?.stop();
    const { event } = entry;
    const name = cameraName(event.cameraDeviceId);
    const video = h("video", { class: "clip-video", controls: true, playsinline: true, "aria-label": `Clip of motion on ${name}` });
    const status = h("p", { class: "muted clip-info" });
    const close = h("button", { type: "button", class: "btn btn-small", "aria-label": `Close clip of motion on ${name}`, onclick: () => {
      entry.player?.stop();
      entry.player = null;
      entry.clip.replaceChildren();
      entry.playBtn?.focus();
    } }, "Close clip");
    entry.clip.replaceChildren(video, h("div", { class: "clip-foot" }, status, close));
    const player = new SegmentPlayer(video, (text) => { status.textContent = text; });
    entry.player = player;
    const from = Date.parse(event.startedAt) - 3000;
    const to = event.endedAt ? Date.parse(event.endedAt) + 3000 : null;
    try {
      await player.play(event.recordingIds[0], { fromMs: from, toMs: to });
    } catch (err) {
      if (err?.name === "AbortError") return;
      status.textContent = `Cannot play: ${err.message}`;
      this.fail(new Error(`Cannot play the clip: ${err.message}`));
    }
  }
}

class RecordingsView extends View {
  static camera = undefined; // undefined until the first camera list: then the first camera
  static day = localDayValue();

  constructor() {
    super("Recordings");
    this.entries = new Map();
    this.gen = 0;
    this.select = h("select", { class: "input", onchange: () => { RecordingsView.camera = this.select.value; this.reload(); } });
    this.day = h("input", { type: "date", class: "input", value: RecordingsView.day, max: localDayValue(), onchange: () => this.setDay(this.day.value) });
    const prev = h("button", { type: "button", class: "btn btn-icon", "aria-label": "Previous date", onclick: () => this.setDay(shiftDay(this.day.value || localDayValue(), -1)) }, icon("left"));
    const next = h("button", { type: "button", class: "btn btn-icon", "aria-label": "Next date", onclick: () => this.setDay(shiftDay(this.day.value || localDayValue(), 1)) }, icon("right"));
    const dayField = field("Day", this.day);
    dayField.wrap.append(h("div", { class: "day-nav" }, prev, next));
    this.video = h("video", { class: "player-video", controls: true, playsinline: true, "aria-label": "Recording player" });
    this.playerTitle = h("h2", { class: "section-title" });
    this.playerInfo = h("p", { class: "muted" });
    this.playerBox = h("section", { class: "player card", hidden: true, "aria-label": "Player" },
      h("div", { class: "player-head" }, this.playerTitle,
        h("button", { type: "button", class: "btn btn-icon", "aria-label": "Close player", onclick: () => this.closePlayer() }, icon("close"))),
      this.video, this.playerInfo);
    this.list = h("ul", { class: "recordings", "aria-label": "Recordings" });
    this.empty = h("p", { class: "empty", hidden: true }, "No recordings on this day.");
    this.loadingEl = h("p", { class: "muted", hidden: true }, "Loading…");
    this.more = h("button", { type: "button", class: "btn", hidden: true, onclick: () => this.loadMore() }, "Load more");
    this.el.append(
      h("div", { class: "page-head" }, this.heading),
      h("div", { class: "toolbar" }, field("Camera", this.select).wrap, dayField.wrap),
      this.alert, this.playerBox, this.list, this.empty, this.loadingEl, h("div", { class: "more" }, this.more));
    this.fillSelect();
  }

  fillSelect() {
    if (RecordingsView.camera === undefined && app.devicesLoaded) RecordingsView.camera = cameras()[0]?.id ?? "";
    setOptions(this.select, cameraOptions(true), RecordingsView.camera ?? "");
    if (app.devicesLoaded) RecordingsView.camera = this.select.value;
  }

  mount() { this.reload(); }

  unmount() {
    this.gen += 1;
    this.player?.stop();
  }

  onDevices() {
    const before = this.select.value;
    this.fillSelect();
    if (this.select.value !== before || this.deferred) { this.reload(); return; }
    for (const entry of this.entries.values()) this.updateEntry(entry, entry.recording);
  }

  onReconnect() { this.reload(); }

  setDay(value) {
    if (!value || value > localDayValue()) return;
    RecordingsView.day = value;
    this.day.value = value;
    this.reload();
  }

  reload() {
    this.gen += 1;
    this.entries.clear();
    this.list.replaceChildren();
    this.cursor = null;
    this.done = false;
    this.loading = false;
    this.clearAlert();
    this.empty.hidden = true;
    // Until the camera list arrives the default camera is unknown.
    this.deferred = RecordingsView.camera === undefined;
    if (this.deferred) { this.loadingEl.hidden = false; return; }
    this.loadMore();
  }

  range() {
    return dayBounds(RecordingsView.day);
  }

  async loadMore() {
    if (this.loading || this.done) return;
    this.loading = true;
    const gen = this.gen;
    this.loadingEl.hidden = false;
    this.more.hidden = true;
    try {
      const { from, to } = this.range();
      const params = new URLSearchParams({ from, to, limit: "50" });
      if (RecordingsView.camera) params.set("cameraDeviceId", RecordingsView.camera);
      if (this.cursor) params.set("cursor", this.cursor);
      const page = await api(`/recordings?${params}`);
      if (gen !== this.gen) return;
      for (const recording of page?.items ?? []) this.upsert(recording, "append");
      this.cursor = page?.nextCursor ?? null;
      this.done = !this.cursor;
    } catch (err) {
      if (gen === this.gen) this.fail(err);
    } finally {
      if (gen === this.gen) {
        this.loading = false;
        this.loadingEl.hidden = true;
        this.more.hidden = this.done;
        this.empty.hidden = !this.done || this.entries.size > 0;
      }
    }
  }

  onRecording(recording) {
    const existing = this.entries.get(recording.id);
    if (existing) { this.updateEntry(existing, { ...existing.recording, ...recording }); return; }
    const { from, to } = this.range();
    const t = Date.parse(recording.startedAt);
    const cameraOk = !RecordingsView.camera || RecordingsView.camera === recording.cameraDeviceId;
    if (cameraOk && t >= Date.parse(from) && t < Date.parse(to)) this.upsert(recording, "prepend");
  }

  upsert(recording, where) {
    if (this.entries.has(recording.id)) return;
    const entry = this.buildEntry(recording);
    this.entries.set(recording.id, entry);
    if (where === "prepend") this.list.prepend(entry.li);
    else this.list.append(entry.li);
    this.empty.hidden = true;
  }

  buildEntry(recording) {
    const entry = {
      recording,
      when: h("time", { class: "rec-time" }),
      camera: h("span", { class: "rec-camera" }),
      meta: h("p", { class: "rec-meta" }),
      status: h("span", { class: "badge" }),
      play: h("button", { type: "button", class: "btn btn-small btn-primary", onclick: () => this.play(entry.recording) }, icon("play"), h("span", null, "Play")),
      download: h("button", { type: "button", class: "btn btn-small", "aria-expanded": "false", onclick: () => this.toggleDownloads(entry) }, "Download"),
      remove: h("button", { type: "button", class: "btn btn-small btn-danger", onclick: () => this.remove(entry) }, "Delete"),
      links: h("ul", { class: "segment-links" }),
    };
    entry.linksBox = h("div", { class: "downloads", hidden: true, id: uid("downloads") }, entry.links);
    entry.download.setAttribute("aria-controls", entry.linksBox.id);
    entry.li = h("li", { class: "rec" },
      h("div", { class: "rec-info" }, h("p", { class: "rec-title" }, entry.when, entry.camera, entry.status), entry.meta),
      h("div", { class: "rec-actions" }, entry.play, entry.download, entry.remove),
      entry.linksBox);
    this.updateEntry(entry, recording);
    return entry;
  }

  updateEntry(entry, recording) {
    entry.recording = recording;
    const at = fmtDateTime(recording.startedAt);
    entry.when.textContent = fmtTime(recording.startedAt);
    entry.when.dateTime = recording.startedAt;
    entry.camera.textContent = RecordingsView.camera ? "" : cameraName(recording.cameraDeviceId);
    const status = { recording: "Recording…", complete: "Complete", failed: "Failed" }[recording.status] ?? recording.status;
    entry.status.textContent = status;
    entry.status.dataset.state = recording.status;
    const duration = recording.status === "recording" && !recording.durationMs
      ? "in progress"
      : fmtDuration(recording.durationMs ?? (recording.endedAt ? Date.parse(recording.endedAt) - Date.parse(recording.startedAt) : 0));
    const parts = [duration, fmtSize(recording.sizeBytes)];
    if (recording.reason) parts.push(recording.reason === "motion" ? "motion" : recording.reason);
    if (recording.status === "failed" && recording.error) parts.push(recording.error);
    entry.meta.textContent = parts.join(" · ");
    entry.play.setAttribute("aria-label", `Play recording from ${at}`);
    entry.remove.setAttribute("aria-label", `Delete recording from ${at}`);
  }

  async play(recording) {
    this.player?.stop();
    this.clearAlert();
    this.playing = recording.id;
    this.playerBox.hidden = false;
    this.playerTitle.textContent = `${cameraName(recording.cameraDeviceId)} — ${fmtDateTime(recording.startedAt)}`;
    this.playerInfo.textContent = "Loading…";
    this.playerBox.scrollIntoView({ block: "nearest" });
    const player = new SegmentPlayer(this.video, (text) => { this.playerInfo.textContent = text; });
    this.player = player;
    try {
      await player.play(recording.id);
    } catch (err) {
      if (err?.name === "AbortError") return;
      this.playerInfo.textContent = "";
      this.fail(new Error(`Cannot play: ${err.message}`));
    }
  }

  closePlayer() {
    this.player?.stop();
    this.player = null;
    this.playing = null;
    this.playerBox.hidden = true;
    this.heading.focus();
  }

  async toggleDownloads(entry) {
    const open = entry.download.getAttribute("aria-expanded") !== "true";
    entry.download.setAttribute("aria-expanded", String(open));
    entry.linksBox.hidden = !open;
    if (!open) return;
    // Download URLs may be short-lived (signed storage links): fetch them each time.
    entry.links.replaceChildren(h("li", { class: "muted" }, "Loading…"));
    try {
      const { id } = entry.recording;
      const detail = await api(`/recordings/${enc(id)}`);
      const segments = (detail.segments ?? []).filter((s) => s.uploadedAt).sort((a, b) => a.seq - b.seq);
      if (!segments.length) { entry.links.replaceChildren(h("li", { class: "muted" }, "No segments uploaded yet.")); return; }
      const urls = await Promise.all(segments.map((s) => api(`/recordings/${enc(id)}/segments/${s.seq}/download-url`)));
      const stamp = localDayValue(new Date(detail.startedAt));
      entry.links.replaceChildren(...segments.map((segment, i) => {
        const ext = segment.contentType === "video/mp4" ? "mp4" : "webm";
        return h("li", null,
          h("a", { href: urls[i].downloadUrl, download: `watchpost-${stamp}-${id.slice(0, 8)}-${i + 1}.${ext}`, rel: "noopener" }, `Segment ${i + 1}`),
          h("span", { class: "muted" }, ` ${fmtDuration(segment.durationMs)} · ${fmtSize(segment.sizeBytes)}`));
      }));
    } catch (err) {
      entry.links.replaceChildren();
      entry.download.setAttribute("aria-expanded", "false");
      entry.linksBox.hidden = true;
      this.fail(err);
    }
  }

  async remove(entry) {
    const at = fmtDateTime(entry.recording.startedAt);
    if (!confirm(`Delete the recording from ${at}? This cannot be undone.`)) return;
    try {
      await api(`/recordings/${enc(entry.recording.id)}`, { method: "DELETE" });
      if (this.playing === entry.recording.id) this.closePlayer();
      entry.li.remove();
      this.entries.delete(entry.recording.id);
      this.empty.hidden = this.entries.size > 0 || !this.done;
      this.heading.focus();
    } catch (err) {
      this.fail(err);
    }
  }
}

class DevicesView extends View {
  constructor() {
    super("Devices");
    this.rows = new Map();
    this.links = [];
    this.linksLoaded = false;

    this.nameInput = h("input", { type: "text", class: "input", autocomplete: "off", maxlength: "100", placeholder: "e.g. Front door" });
    this.kindSelect = h("select", { class: "input" }, option("camera", "Camera"), option("client", "Viewer"));
    this.registerBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Register device");
    this.form = h("form", { class: "card add-form", "aria-label": "Add a device", onsubmit: (e) => this.register(e) },
      h("h2", { class: "section-title" }, "Add a device"),
      h("div", { class: "form-row" }, field("Device name", this.nameInput).wrap, field("Kind", this.kindSelect).wrap, this.registerBtn),
      h("p", { class: "hint" }, "A camera streams and records; a viewer (a phone or tablet app) watches the cameras linked to it."));
    this.pairingSlot = h("div");

    this.tbody = h("tbody");
    this.table = h("table", { class: "devices", "aria-label": "Your devices" },
      h("thead", null, h("tr", null, ["Name", "Kind", "Connection", "Status", "Recording", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      this.tbody);
    this.devicesEmpty = h("p", { class: "empty", hidden: true }, "No devices yet. Register a camera above.");

    this.linkCamera = h("select", { class: "input" });
    this.linkViewer = h("select", { class: "input" });
    this.linkBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Link");
    this.linksList = h("ul", { class: "links", "aria-label": "Links" });
    this.linksHint = h("p", { class: "hint" });

    this.el.append(
      h("div", { class: "page-head" }, this.heading),
      this.alert, this.form, this.pairingSlot,
      h("section", { class: "card", "aria-labelledby": "devices-title" },
        h("h2", { class: "section-title", id: "devices-title" }, "Device list"),
        h("div", { class: "table-wrap" }, this.table), this.devicesEmpty),
      h("section", { class: "card", "aria-labelledby": "links-title" },
        h("h2", { class: "section-title", id: "links-title" }, "Links"),
        h("p", { class: "hint" }, "A viewer can watch the cameras linked to it."),
        h("form", { class: "form-row", onsubmit: (e) => this.link(e) },
          field("Link camera", this.linkCamera).wrap, field("Link viewer", this.linkViewer).wrap, this.linkBtn),
        this.linksHint, this.linksList));
  }

  mount() {
    this.render();
    this.renderLinks();
    refreshDevices();
    this.loadLinks();
  }

  onDevices() {
    this.render();
    this.renderLinks();
  }

  render() {
    const list = [...cameras(), ...viewers()];
    this.devicesEmpty.hidden = !app.devicesLoaded || list.length > 0;
    this.table.hidden = list.length === 0;
    for (const [id, row] of this.rows) {
      if (!app.devices.has(id)) { row.tr.remove(); this.rows.delete(id); }
    }
    list.forEach((device, index) => {
      let row = this.rows.get(device.id);
      if (!row) { row = this.buildRow(device); this.rows.set(device.id, row); }
      this.updateRow(row, device);
      if (this.tbody.children[index] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[index] ?? null);
    });
  }

  buildRow(device) {
    const row = {
      device,
      nameCell: h("td", { class: "dev-name", "data-label": "Name" }),
      kind: h("td", { "data-label": "Kind" }),
      presence: h("span", { class: "presence" }),
      status: h("span", { class: "badge" }),
      modeCell: h("td", { "data-label": "Recording" }),
      rename: h("button", { type: "button", class: "btn btn-small", onclick: () => this.startRename(row) }, "Rename"),
      toggle: h("button", { type: "button", class: "btn btn-small", onclick: () => this.toggleStatus(row) }),
      remove: h("button", { type: "button", class: "btn btn-small btn-danger", onclick: () => this.remove(row) }, "Delete"),
      renaming: false,
    };
    if (device.role === "camera") {
      row.mode = h("select", { class: "input input-small", onchange: () => this.setMode(row) },
        option("", "Server default"), option("off", "Off"), option("always", "Always"), option("motion", "On motion"));
      row.modeCell.append(row.mode);
    } else {
      row.modeCell.append(h("span", { class: "muted" }, "—"));
    }
    row.tr = h("tr", null, row.nameCell, row.kind,
      h("td", { "data-label": "Connection" }, row.presence),
      h("td", { "data-label": "Status" }, row.status),
      row.modeCell,
      h("td", { class: "dev-actions", "data-label": "Actions" }, h("div", { class: "row-actions" }, row.rename, row.toggle, row.remove)));
    return row;
  }

  updateRow(row, device) {
    row.device = device;
    const { name } = device;
    if (!row.renaming) row.nameCell.replaceChildren(h("span", { class: "dev-title" }, name));
    row.kind.textContent = kindLabel(device.role);
    row.presence.textContent = device.online ? "Online" : "Offline";
    row.presence.dataset.state = device.online ? "online" : "offline";
    const disabled = device.status === "disabled";
    row.status.textContent = disabled ? "Disabled" : "Active";
    row.status.dataset.state = disabled ? "disabled" : "active";
    row.tr.classList.toggle("is-disabled", disabled);
    row.rename.setAttribute("aria-label", `Rename ${name}`);
    row.toggle.textContent = disabled ? "Enable" : "Disable";
    row.toggle.setAttribute("aria-label", `${disabled ? "Enable" : "Disable"} ${name}`);
    row.remove.setAttribute("aria-label", `Delete ${name}`);
    if (row.mode) {
      row.mode.setAttribute("aria-label", `Recording mode for ${name}`);
      if (document.activeElement !== row.mode) row.mode.value = device.recordingMode ?? "";
    }
  }

  async patch(row, body) {
    const reply = await api(`/devices/${enc(row.device.id)}`, { method: "PATCH", body });
    const device = reply?.device ?? reply;
    putDevice(device);
    return { device, deviceToken: reply?.deviceToken };
  }

  async register(event) {
    event.preventDefault();
    this.clearAlert();
    const name = this.nameInput.value.trim();
    if (!name) { this.fail(new Error("Give the device a name.")); this.nameInput.focus(); return; }
    this.registerBtn.disabled = true;
    try {
      const reply = await api("/devices/register", { method: "POST", body: { name, role: this.kindSelect.value, platform: "web" } });
      this.nameInput.value = "";
      putDevice(reply.device);
      this.showPairing(reply.device, reply.deviceToken);
    } catch (err) {
      this.fail(err);
    } finally {
      this.registerBtn.disabled = false;
    }
  }

  showPairing(device, token) {
    const tokenInput = h("input", { type: "text", class: "input token", readOnly: true, value: token, spellcheck: "false", autocomplete: "off" });
    const copied = h("span", { role: "status", class: "copied" });
    const copy = h("button", { type: "button", class: "btn", onclick: async () => {
      copied.textContent = (await copyText(tokenInput)) ? "Copied" : "Press Ctrl+C (or ⌘C) to copy the selected token";
      clearTimeout(this.copiedTimer);
      this.copiedTimer = setTimeout(() => { copied.textContent = ""; }, 5000);
    } }, "Copy token");
    const section = h("section", { class: "card pairing", role: "region", "aria-label": "Pairing", tabindex: "-1" },
      h("h2", { class: "section-title" }, `Pair “${device.name}” (${kindLabel(device.role).toLowerCase()})`),
      h("div", { class: "pairing-body" },
        pairingQr(`${location.origin}/sim/mobile-sim.html#pair=${token}`),
        h("div", { class: "pairing-token" },
          field("Device token", tokenInput).wrap,
          h("div", { class: "row" }, copy, copied),
          h("p", { class: "hint" }, "Shown once — scan it with the phone or paste it into the app."),
          h("button", { type: "button", class: "btn btn-primary", onclick: () => { section.remove(); this.nameInput.focus(); } }, "Done"))));
    this.pairingSlot.replaceChildren(section);
    section.scrollIntoView({ block: "nearest" });
    section.focus({ preventScroll: true });
  }

  startRename(row) {
    for (const other of this.rows.values()) if (other !== row && other.renaming) this.endRename(other);
    const { name } = row.device;
    const input = h("input", { type: "text", class: "input input-small", value: name, maxlength: "100", "aria-label": `New name for ${name}` });
    const cancel = h("button", { type: "button", class: "btn btn-small", onclick: () => this.endRename(row, true) }, "Cancel");
    const form = h("form", { class: "rename", onsubmit: (e) => { e.preventDefault(); this.saveRename(row, input.value); } },
      input, h("button", { type: "submit", class: "btn btn-small btn-primary" }, "Save"), cancel);
    input.addEventListener("keydown", (e) => { if (e.key === "Escape") this.endRename(row, true); });
    row.renaming = true;
    row.nameCell.replaceChildren(form);
    input.focus();
    input.select();
  }

  endRename(row, refocus = false) {
    row.renaming = false;
    this.updateRow(row, app.devices.get(row.device.id) ?? row.device);
    if (refocus) row.rename.focus();
  }

  async saveRename(row, value) {
    const name = value.trim();
    if (!name) { this.fail(new Error("The name cannot be empty.")); return; }
    this.clearAlert();
    try {
      if (name !== row.device.name) await this.patch(row, { name });
      this.endRename(row, true);
    } catch (err) {
      this.fail(err);
    }
  }

  async toggleStatus(row) {
    this.clearAlert();
    const status = row.device.status === "disabled" ? "active" : "disabled";
    try {
      const { device, deviceToken } = await this.patch(row, { status });
      if (deviceToken) this.showPairing(device, deviceToken);
    } catch (err) {
      this.fail(err);
    }
  }

  async setMode(row) {
    this.clearAlert();
    const previous = row.device.recordingMode ?? "";
    try {
      await this.patch(row, { recordingMode: row.mode.value || null });
    } catch (err) {
      row.mode.value = previous;
      this.fail(err);
    }
  }

  async remove(row) {
    const { device } = row;
    if (!confirm(`Delete “${device.name}”? It will have to be registered and paired again.`)) return;
    this.clearAlert();
    try {
      await api(`/devices/${enc(device.id)}`, { method: "DELETE" });
      app.devices.delete(device.id);
      app.lastMotion.delete(device.id);
      devicesChanged();
      this.heading.focus();
      this.loadLinks();
    } catch (err) {
      this.fail(err);
    }
  }

  async loadLinks() {
    try {
      this.links = await fetchAll("/device-links?limit=100");
      this.linksLoaded = true;
      this.renderLinks();
    } catch (err) {
      this.fail(err);
    }
  }

  renderLinks() {
    const cams = cameras();
    const clients = viewers();
    setOptions(this.linkCamera, cams.map((d) => [d.id, d.name]));
    setOptions(this.linkViewer, clients.map((d) => [d.id, d.name]));
    this.linkBtn.disabled = !cams.length || !clients.length;
    this.linksHint.textContent = this.linkBtn.disabled ? "Register a camera and a viewer to link them." : "";
    this.linksHint.hidden = !this.linkBtn.disabled;
    if (!this.linksLoaded) return;
    // Presence updates re-render often: leave the list (and focus in it) alone unless it changed.
    const signature = JSON.stringify(this.links.map((l) => [l.id, deviceName(l.cameraDeviceId), deviceName(l.clientDeviceId)]));
    if (signature === this.linksSignature) return;
    this.linksSignature = signature;
    const items = this.links.map((link) => {
      const camera = deviceName(link.cameraDeviceId);
      const viewer = deviceName(link.clientDeviceId);
      return h("li", null, h("span", null, `${camera} → ${viewer}`),
        h("button", { type: "button", class: "btn btn-small", "aria-label": `Unlink ${camera} from ${viewer}`, onclick: () => this.unlink(link) }, "Unlink"));
    });
    this.linksList.replaceChildren(...items);
    this.linksList.classList.toggle("is-empty", items.length === 0);
  }

  async link(event) {
    event.preventDefault();
    this.clearAlert();
    try {
      const link = await api("/device-links", { method: "POST", body: { cameraDeviceId: this.linkCamera.value, clientDeviceId: this.linkViewer.value } });
      this.links = [link, ...this.links.filter((l) => l.id !== link.id)];
      this.renderLinks();
    } catch (err) {
      this.fail(err);
    }
  }

  async unlink(link) {
    this.clearAlert();
    try {
      await api(`/device-links/${enc(link.id)}`, { method: "DELETE" });
      this.links = this.links.filter((l) => l.id !== link.id);
      this.renderLinks();
      this.linkBtn.focus();
    } catch (err) {
      this.fail(err);
    }
  }
}

function pairingQr(text) {
  if (typeof qrcode !== "function") return h("p", { class: "muted" }, "QR code unavailable; paste the token instead.");
  const qr = qrcode(0, "M");
  qr.addData(text);
  qr.make();
  const size = qr.getModuleCount() * 4 + 32; // createDataURL's default margin is 4 cells
  return h("img", { class: "qr", alt: "Pairing QR code", src: qr.createDataURL(4), width: size, height: size });
}

async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    input.focus();
    input.select();
    try { return document.execCommand("copy"); } catch { return false; }
  }
}

Object.assign(VIEWS, { cameras: CamerasView, timeline: TimelineView, recordings: RecordingsView, devices: DevicesView });

boot().catch((err) => {
  app.root.replaceChildren(h("main", { class: "auth" }, h("div", { class: "auth-card" },
    h("h1", null, "Watchpost"), h("p", { role: "alert", class: "alert" }, `Watchpost could not start: ${err.message}`))));
});
