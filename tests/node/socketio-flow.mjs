#!/usr/bin/env node
// End-to-end realtime check: play a camera, a client and a signed-in user
// against a running Watchpost server with the official `socket.io-client`.
//
// Usage: node socketio-flow.mjs <baseURL> [websocket|polling]
//   <baseURL>  e.g. http://127.0.0.1:3000
//   transport  the only transport the sockets may use (default: websocket)
//
// Exit status: 0 when every step passes, 1 on the first failure or after a
// 45 s overall timeout. One line is printed per step.
//
// Every wait is event-driven: the listener is registered before the action
// that triggers the event, events are buffered from that moment, and the wait
// (5 s at most) resolves on the first buffered/arriving event that matches.
//
// Notes on the wire behaviour this relies on:
// * Node's fetch sends `Sec-Fetch-Mode: cors` without an Origin, which makes
//   the auth routes insist on an Origin; we send `Origin: <origin of baseURL>`.
// * The sign-up response's `token` is used both as `Authorization: Bearer` for
//   user routes and as `auth.token` for the user-session socket.

import { randomBytes } from "node:crypto";
import { io } from "socket.io-client";

const OVERALL_TIMEOUT_MS = 45_000;
const WAIT_MS = 5_000;

const baseURL = process.argv[2];
const transport = process.argv[3] ?? "websocket";
if (!baseURL) {
	console.error("usage: node socketio-flow.mjs <baseURL> [websocket|polling]");
	process.exit(2);
}
if (transport !== "websocket" && transport !== "polling") {
	console.error(`FAIL: transport must be "websocket" or "polling", got ${JSON.stringify(transport)}`);
	process.exit(1);
}
let origin;
try {
	origin = new URL(baseURL).origin;
} catch {
	console.error(`FAIL: invalid baseURL: ${baseURL}`);
	process.exit(1);
}
const base = baseURL.replace(/\/+$/, "");

const sockets = new Set();
let currentStep = "setup";

function closeAll() {
	for (const s of sockets) {
		try {
			s.disconnect();
		} catch {
			// ignore
		}
	}
	sockets.clear();
}

function show(value) {
	try {
		return JSON.stringify(value);
	} catch {
		return String(value);
	}
}

function fail(message, detail) {
	console.error(`FAIL [${currentStep}] (${transport}): ${message}`);
	if (detail !== undefined) console.error(`  detail: ${show(detail)}`);
	closeAll();
	process.exit(1);
}

const overallTimer = setTimeout(
	() => fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000}s exceeded`),
	OVERALL_TIMEOUT_MS,
);

process.on("unhandledRejection", (e) => fail(`unexpected error: ${e?.message ?? e}`));
process.on("uncaughtException", (e) => fail(`unexpected error: ${e?.message ?? e}`));

function ok(message) {
	console.log(`ok   [${currentStep}] ${message}`);
}

function check(condition, message, detail) {
	if (!condition) fail(message, detail);
}

/** Checks `actual[key] === expected` for each entry; `what` names the object. */
function expectFields(what, actual, expected) {
	check(actual && typeof actual === "object", `${what}: expected an object`, actual);
	for (const [key, value] of Object.entries(expected)) {
		check(
			actual[key] === value,
			`${what}: expected ${key} = ${show(value)}, got ${show(actual[key])}`,
			actual,
		);
	}
}

// ---------------------------------------------------------------- HTTP ----

async function api(method, path, { token, body, origin: withOrigin = false } = {}) {
	const headers = { accept: "application/json" };
	if (body !== undefined) headers["content-type"] = "application/json";
	if (token) headers.authorization = `Bearer ${token}`;
	if (withOrigin) headers.origin = origin;
	let res;
	try {
		res = await fetch(`${base}${path}`, {
			method,
			headers,
			body: body === undefined ? undefined : JSON.stringify(body),
			signal: AbortSignal.timeout(WAIT_MS),
		});
	} catch (e) {
		fail(`${method} ${path}: request failed: ${e?.message ?? e}`);
	}
	const text = await res.text();
	let json;
	try {
		json = text ? JSON.parse(text) : undefined;
	} catch {
		json = text;
	}
	return { status: res.status, body: json };
}

/** A request that must answer with `status`; returns the parsed body. */
async function expectStatus(status, method, path, opts) {
	const res = await api(method, path, opts);
	check(
		res.status === status,
		`${method} ${path}: expected HTTP ${status}, got ${res.status}`,
		res.body,
	);
	return res.body;
}

// ------------------------------------------------------------- sockets ----

/**
 * Starts listening for `event` on `socket` now (before the triggering action)
 * and buffers what arrives. `until(pred)` later resolves with the first
 * buffered or arriving payload matching `pred`, or fails after 5 s.
 */
function listen(socket, event, label) {
	const seen = [];
	const waiters = new Set();
	const listener = (payload) => {
		seen.push(payload);
		for (const w of [...waiters]) w(payload);
	};
	socket.on(event, listener);
	return {
		seen,
		until(pred = () => true, what = "") {
			const desc = `${label} "${event}"${what ? ` ${what}` : ""}`;
			return new Promise((resolve, reject) => {
				const hit = seen.find(pred);
				if (hit !== undefined) return resolve(hit);
				const timer = setTimeout(() => {
					waiters.delete(waiter);
					reject(
						new Error(
							`timed out after ${WAIT_MS / 1000}s waiting for ${desc}; received ${seen.length} "${event}" event(s): ${show(seen)}`,
						),
					);
				}, WAIT_MS);
				const waiter = (payload) => {
					if (!pred(payload)) return;
					clearTimeout(timer);
					waiters.delete(waiter);
					resolve(payload);
				};
				waiters.add(waiter);
			});
		},
		stop() {
			socket.off(event, listener);
		},
	};
}

async function wait(promise) {
	try {
		return await promise;
	} catch (e) {
		fail(e?.message ?? String(e));
	}
}

function makeSocket(token) {
	const socket = io(base, {
		auth: { token },
		transports: [transport],
		reconnection: false,
		forceNew: true,
		timeout: WAIT_MS,
	});
	sockets.add(socket);
	return socket;
}

/** Resolves on "connect"; rejects on "connect_error" or after 5 s. */
function connected(socket, label) {
	return new Promise((resolve, reject) => {
		if (socket.connected) return resolve();
		const timer = setTimeout(() => {
			cleanup();
			reject(new Error(`timed out after ${WAIT_MS / 1000}s waiting for ${label} to connect`));
		}, WAIT_MS);
		const onConnect = () => {
			cleanup();
			resolve();
		};
		const onError = (err) => {
			cleanup();
			reject(new Error(`${label} got connect_error: ${err?.message ?? err}`));
		};
		const cleanup = () => {
			clearTimeout(timer);
			socket.off("connect", onConnect);
			socket.off("connect_error", onError);
		};
		socket.on("connect", onConnect);
		socket.on("connect_error", onError);
	});
}

/** Emits with an acknowledgement callback; rejects if none comes within 5 s. */
function emitWithAck(socket, event, payload) {
	return new Promise((resolve, reject) => {
		socket.timeout(WAIT_MS).emit(event, payload, (err, reply) => {
			if (err) reject(new Error(`no ack callback for "${event}" within ${WAIT_MS / 1000}s`));
			else resolve(reply);
		});
	});
}

// ---------------------------------------------------------------- main ----

async function main() {
	// 1. user, devices, link --------------------------------------------------
	currentStep = "1 setup";
	const suffix = randomBytes(6).toString("hex");
	const email = `sio-${suffix}@example.com`;
	const signUp = await expectStatus(200, "POST", "/api/auth/sign-up/email", {
		origin: true,
		body: { name: `Socket ${suffix}`, email, password: `pw-${suffix}-Secret!` },
	});
	check(typeof signUp?.token === "string" && signUp.token, "sign-up: no token", signUp);
	check(signUp.user?.email === email, "sign-up: user.email mismatch", signUp);
	const userToken = signUp.token;

	const cam = await expectStatus(201, "POST", "/devices/register", {
		token: userToken,
		body: { name: "Porch camera", role: "camera" },
	});
	check(cam?.device?.id && cam.deviceToken, "camera register: missing device.id/deviceToken", cam);
	expectFields("camera device", cam.device, { role: "camera" });
	const cli = await expectStatus(201, "POST", "/devices/register", {
		token: userToken,
		body: { name: "Phone", role: "client" },
	});
	check(cli?.device?.id && cli.deviceToken, "client register: missing device.id/deviceToken", cli);
	expectFields("client device", cli.device, { role: "client" });
	const cameraId = cam.device.id;
	const clientId = cli.device.id;
	const cameraToken = cam.deviceToken;
	const clientToken = cli.deviceToken;

	const link = await expectStatus(201, "POST", "/device-links", {
		token: userToken,
		body: { cameraDeviceId: cameraId, clientDeviceId: clientId },
	});
	expectFields("link", link, { cameraDeviceId: cameraId, clientDeviceId: clientId });
	ok(`signed up ${email}; camera ${cameraId}, client ${clientId} registered and linked`);

	// 2. bad token --------------------------------------------------------------
	currentStep = "2 bad token";
	{
		const bogus = makeSocket("wpd_bogus");
		const outcome = await new Promise((resolve) => {
			const timer = setTimeout(() => resolve({ kind: "timeout" }), WAIT_MS);
			bogus.on("connect", () => {
				clearTimeout(timer);
				resolve({ kind: "connect" });
			});
			bogus.on("connect_error", (err) => {
				clearTimeout(timer);
				resolve({ kind: "error", err });
			});
		});
		bogus.disconnect();
		sockets.delete(bogus);
		check(outcome.kind !== "connect", "a socket with auth.token \"wpd_bogus\" was accepted");
		check(outcome.kind !== "timeout", `no connect_error within ${WAIT_MS / 1000}s for a bogus token`);
		const message = outcome.err?.message;
		check(
			typeof message === "string" && message.trim() !== "",
			"connect_error has an empty message",
			{ message, data: outcome.err?.data },
		);
		ok(`bogus device token refused: connect_error "${message}"`);
	}

	// 3. connect ----------------------------------------------------------------
	currentStep = "3 connect";
	let camera = makeSocket(cameraToken);
	const client = makeSocket(clientToken);
	const user = makeSocket(userToken);
	await wait(
		Promise.all([
			connected(camera, "camera socket"),
			connected(client, "client socket"),
			connected(user, "user-session socket"),
		]),
	);
	check(
		camera.io.engine.transport.name === transport &&
			client.io.engine.transport.name === transport &&
			user.io.engine.transport.name === transport,
		`sockets are not using the ${transport} transport`,
	);
	ok(`camera, client and user-session sockets connected over ${transport}`);

	// 4. command acknowledged ----------------------------------------------------
	currentStep = "4 command ack";
	{
		const received = listen(camera, "command:received", "camera");
		const clientStatus = listen(client, "command:status", "client");
		const userStatus = listen(user, "command:status", "user session");
		const created = await expectStatus(201, "POST", "/commands", {
			token: clientToken,
			body: { targetDeviceId: cameraId, type: "take_snapshot", payload: { quality: "high" } },
		});
		check(typeof created?.id === "string", "POST /commands: no id", created);
		expectFields("created command", created, {
			sourceDeviceId: clientId,
			targetDeviceId: cameraId,
			type: "take_snapshot",
		});
		check(
			created.status === "dispatched" || created.status === "queued",
			`created command: unexpected status ${show(created.status)}`,
			created,
		);
		const id = created.id;
		const got = await wait(received.until((c) => c?.id === id, `for command ${id}`));
		expectFields("command:received", got, {
			id,
			type: "take_snapshot",
			status: "dispatched",
			sourceDeviceId: clientId,
			targetDeviceId: cameraId,
		});
		check(got.payload?.quality === "high", "command:received: payload not passed through", got);
		await wait(
			clientStatus.until((c) => c?.id === id && c.status === "dispatched", `dispatched for ${id}`),
		);

		const reply = await wait(
			emitWithAck(camera, "command:ack", { commandId: id, status: "acknowledged" }),
		);
		check(reply?.ok === true, "command:ack callback: expected ok:true", reply);
		expectFields("command:ack callback command", reply.command, { id, status: "acknowledged" });

		const status = await wait(
			clientStatus.until((c) => c?.id === id && c.status === "acknowledged", `acknowledged for ${id}`),
		);
		expectFields("client command:status", status, { id, status: "acknowledged", type: "take_snapshot" });
		const userSaw = await wait(
			userStatus.until((c) => c?.id === id && c.status === "acknowledged", `acknowledged for ${id}`),
		);
		expectFields("user command:status", userSaw, { id, status: "acknowledged" });
		for (const l of [received, clientStatus, userStatus]) l.stop();
		ok(`take_snapshot ${id}: received by camera (dispatched), acked, client and user saw "acknowledged"`);
	}

	// 5. command rejected ---------------------------------------------------------
	currentStep = "5 command reject";
	{
		const received = listen(camera, "command:received", "camera");
		const clientStatus = listen(client, "command:status", "client");
		const created = await expectStatus(201, "POST", "/commands", {
			token: clientToken,
			body: { targetDeviceId: cameraId, type: "siren_on" },
		});
		const id = created?.id;
		check(typeof id === "string", "POST /commands: no id", created);
		const got = await wait(received.until((c) => c?.id === id, `for command ${id}`));
		expectFields("command:received", got, { id, type: "siren_on", status: "dispatched" });

		const reply = await wait(
			emitWithAck(camera, "command:ack", { commandId: id, status: "rejected", reason: "busy" }),
		);
		check(reply?.ok === true, "command:ack (rejected) callback: expected ok:true", reply);
		expectFields("command:ack callback command", reply.command, { id, status: "rejected", reason: "busy" });
		const status = await wait(
			clientStatus.until((c) => c?.id === id && c.status === "rejected", `rejected for ${id}`),
		);
		expectFields("client command:status", status, { id, status: "rejected", reason: "busy" });

		const again = await wait(
			emitWithAck(camera, "command:ack", { commandId: id, status: "acknowledged" }),
		);
		expectFields("second command:ack callback", again, { ok: false, code: "COMMAND_ALREADY_FINAL" });
		check(
			typeof again.message === "string" && again.message !== "",
			"second command:ack callback: empty message",
			again,
		);
		received.stop();
		clientStatus.stop();
		ok(`siren_on ${id}: rejected "busy" seen by client; re-ack answered COMMAND_ALREADY_FINAL`);
	}

	// 6. motion -------------------------------------------------------------------
	currentStep = "6 motion";
	{
		const detected = listen(client, "motion:detected", "client");
		const ended = listen(client, "motion:ended", "client");
		const started = await expectStatus(201, "POST", "/events/motion/start", {
			token: cameraToken,
			body: { score: 0.87 },
		});
		const id = started?.id;
		check(typeof id === "string", "motion start: no id", started);
		expectFields("motion start response", started, { cameraDeviceId: cameraId, endedAt: null });
		const det = await wait(detected.until((e) => e?.id === id, `for event ${id}`));
		expectFields("motion:detected", det, { id, cameraDeviceId: cameraId, endedAt: null });

		const end = await expectStatus(200, "POST", `/events/${id}/motion/end`, { token: cameraToken });
		expectFields("motion end response", end, { id });
		check(typeof end.endedAt === "string" && end.endedAt, "motion end response: endedAt not set", end);
		const endEv = await wait(ended.until((e) => e?.id === id, `for event ${id}`));
		expectFields("motion:ended", endEv, { id, cameraDeviceId: cameraId });
		check(typeof endEv.endedAt === "string" && endEv.endedAt, "motion:ended: endedAt not set", endEv);

		const second = await expectStatus(409, "POST", `/events/${id}/motion/end`, { token: cameraToken });
		expectFields("second motion end", second, { code: "EVENT_ALREADY_ENDED" });
		detected.stop();
		ended.stop();
		ok(`motion ${id}: client got motion:detected and motion:ended; second end → 409 EVENT_ALREADY_ENDED`);
	}

	// 7. stream --------------------------------------------------------------------
	currentStep = "7 stream";
	{
		const requested = listen(client, "stream:requested", "client");
		const startCmd = listen(camera, "command:received", "camera");
		const started = listen(client, "stream:started", "client");
		const clientEnded = listen(client, "stream:ended", "client");
		const cameraEnded = listen(camera, "stream:ended", "camera");

		const session = await expectStatus(201, "POST", "/streams/request", {
			token: clientToken,
			body: { cameraDeviceId: cameraId },
		});
		const sid = session?.id;
		check(typeof sid === "string", "stream request: no id", session);
		expectFields("stream request response", session, { status: "requested" });

		const req = await wait(requested.until((s) => s?.id === sid, `for session ${sid}`));
		expectFields("stream:requested", req, { id: sid, status: "requested" });
		const cmd = await wait(
			startCmd.until(
				(c) => c?.type === "start_stream" && c.payload?.streamSessionId === sid,
				`start_stream for session ${sid}`,
			),
		);
		expectFields("start_stream command", cmd, { type: "start_stream", status: "dispatched" });
		expectFields("start_stream payload", cmd.payload, { streamSessionId: sid });

		const accepted = await expectStatus(200, "POST", `/streams/${sid}/accept`, { token: cameraToken });
		expectFields("accept response", accepted, { id: sid, status: "streaming" });
		const st = await wait(started.until((s) => s?.id === sid, `for session ${sid}`));
		expectFields("stream:started", st, { id: sid, status: "streaming" });

		const endRes = await expectStatus(200, "POST", `/streams/${sid}/end`, { token: clientToken });
		expectFields("end response", endRes, { id: sid, status: "ended" });
		const ce = await wait(clientEnded.until((s) => s?.id === sid, `for session ${sid}`));
		expectFields("client stream:ended", ce, { id: sid, status: "ended" });
		const ke = await wait(cameraEnded.until((s) => s?.id === sid, `for session ${sid}`));
		expectFields("camera stream:ended", ke, { id: sid, status: "ended" });

		// Close the start_stream command like a real camera would.
		const ack = await wait(
			emitWithAck(camera, "command:ack", { commandId: cmd.id, status: "acknowledged" }),
		);
		check(ack?.ok === true, "ack of start_stream command: expected ok:true", ack);
		for (const l of [requested, startCmd, started, clientEnded, cameraEnded]) l.stop();
		ok(`stream ${sid}: requested → start_stream command → streaming → ended (client and camera notified)`);
	}

	// 8. offline delivery -------------------------------------------------------------
	currentStep = "8 offline delivery";
	{
		// The server emits nothing when a device goes offline, and GET /devices
		// reports `online` for 60 s after the last sighting. But its disconnect
		// handler first drops the socket from presence and then bumps the
		// device's lastSeenAt, so a new lastSeenAt means the server has seen
		// the disconnect (otherwise the command below could race it and be
		// "dispatched" to nobody instead of "queued").
		const lastSeen = async () => {
			const page = await expectStatus(200, "GET", "/devices?limit=200", { token: userToken });
			const dev = page?.items?.find((d) => d.id === cameraId);
			check(dev, "GET /devices: camera missing", page);
			return dev.lastSeenAt;
		};
		const before = await lastSeen();
		camera.disconnect();
		sockets.delete(camera);
		const deadline = Date.now() + WAIT_MS;
		for (;;) {
			const now = await lastSeen();
			if (now !== before) break;
			check(
				Date.now() < deadline,
				`timed out after ${WAIT_MS / 1000}s waiting for the server to register the camera's disconnect (lastSeenAt stayed ${show(before)})`,
			);
			await new Promise((r) => setTimeout(r, 25));
		}

		const clientStatus = listen(client, "command:status", "client");
		const created = await expectStatus(201, "POST", "/commands", {
			token: clientToken,
			body: { targetDeviceId: cameraId, type: "reboot" },
		});
		const id = created?.id;
		check(typeof id === "string", "POST /commands: no id", created);
		expectFields("command created while camera offline", created, { status: "queued", type: "reboot" });

		camera = makeSocket(cameraToken); // listeners below are attached before the connection opens
		const received = listen(camera, "command:received", "reconnected camera");
		await wait(connected(camera, "reconnected camera socket"));
		const got = await wait(received.until((c) => c?.id === id, `for queued command ${id}`));
		expectFields("redelivered command:received", got, { id, type: "reboot", status: "dispatched" });
		const st = await wait(
			clientStatus.until((c) => c?.id === id && c.status === "dispatched", `dispatched for ${id}`),
		);
		expectFields("client command:status", st, { id, status: "dispatched" });
		const ack = await wait(emitWithAck(camera, "command:ack", { commandId: id, status: "acknowledged" }));
		check(ack?.ok === true, "ack of redelivered command: expected ok:true", ack);
		received.stop();
		clientStatus.stop();
		ok(`reboot ${id}: queued while camera offline, delivered on reconnect and acknowledged`);
	}

	currentStep = "done";
	closeAll();
	clearTimeout(overallTimer);
	ok(`all steps passed over ${transport}`);
	process.exit(0);
}

main().catch((e) => fail(`unexpected error: ${e?.stack ?? e}`));
