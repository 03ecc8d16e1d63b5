#!/usr/bin/env node
// Compatibility check: drive a server with the official better-auth client
// (`createAuthClient` from `better-auth/client`) the way a Node app would.
//
// Usage: node better-auth-client.mjs <baseURL>
//   <baseURL> e.g. http://127.0.0.1:3000  (the client appends /api/auth when
//   the URL has no path; pass http://host:port/custom/path to override).
//
// Exit status: 0 when every step passes, 1 on the first failure or after a
// 10 s overall timeout.
//
// Notes on the wire behaviour this relies on (better-auth 1.7.x):
// * Node's fetch (undici) sends `Sec-Fetch-Mode: cors` but no `Origin`, and
//   better-auth's formCsrfMiddleware on /sign-up/email and /sign-in/email then
//   insists on an Origin/Referer (403 MISSING_OR_NULL_ORIGIN otherwise). So,
//   as a real Node app must, we send `Origin: <origin of baseURL>` (the
//   base URL's origin is always trusted).
// * There is no cookie jar in Node, so the session is carried with the bearer
//   plugin: the `set-auth-token` response header (signed token) is sent back
//   as `Authorization: Bearer <token>`.

import { randomBytes } from "node:crypto";
import { createAuthClient } from "better-auth/client";

const TIMEOUT_MS = 10_000;

const baseURL = process.argv[2];
if (!baseURL) {
	console.error("usage: node better-auth-client.mjs <baseURL>");
	process.exit(2);
}
let origin;
try {
	origin = new URL(baseURL).origin;
} catch {
	console.error(`FAIL: invalid baseURL: ${baseURL}`);
	process.exit(1);
}

const timer = setTimeout(() => {
	console.error(`FAIL: overall timeout of ${TIMEOUT_MS / 1000}s exceeded`);
	process.exit(1);
}, TIMEOUT_MS);

function fail(step, message, detail) {
	console.error(`FAIL [${step}]: ${message}`);
	if (detail !== undefined) {
		let text;
		try {
			text = JSON.stringify(detail);
		} catch {
			text = String(detail);
		}
		console.error(`  detail: ${text}`);
	}
	process.exit(1);
}

function ok(step, message) {
	console.log(`ok   [${step}] ${message}`);
}

// Run one client call; fail on a thrown (network) error.
async function call(step, fn) {
	try {
		return await fn();
	} catch (e) {
		fail(step, `request threw: ${e?.message ?? e}`, e?.cause?.message);
	}
}

function expectNoError(step, res) {
	if (!res || typeof res !== "object") fail(step, "client returned no result object", res);
	if (res.error) fail(step, `unexpected error status=${res.error.status} code=${res.error.code}`, res.error);
}

const client = createAuthClient({
	baseURL,
	fetchOptions: { headers: { origin } },
});

const email = `wp-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}@example.com`;
const password = `pw-${randomBytes(8).toString("hex")}`;
const name = "Watchpost Client Test";

async function main() {
	// 1. sign up
	let step = "sign-up";
	const signUp = await call(step, () => client.signUp.email({ email, password, name }));
	expectNoError(step, signUp);
	const su = signUp.data;
	if (!su || typeof su.token !== "string" || su.token.length === 0) fail(step, "data.token missing or empty", su);
	if (!su.user || su.user.email !== email) fail(step, `data.user.email !== ${email}`, su?.user);
	if (typeof su.user.id !== "string" || su.user.id.length === 0) fail(step, "data.user.id missing", su.user);
	if (su.user.name !== name) fail(step, `data.user.name !== ${JSON.stringify(name)}`, su.user);
	const userId = su.user.id;
	ok(step, `created ${email} (user.id=${userId})`);

	// 2. sign in with the same credentials; capture the set-auth-token header
	step = "sign-in";
	let authToken = null;
	const signIn = await call(step, () =>
		client.signIn.email(
			{ email, password },
			{
				onSuccess(ctx) {
					authToken = ctx.response.headers.get("set-auth-token");
				},
			},
		),
	);
	expectNoError(step, signIn);
	const si = signIn.data;
	if (!si || typeof si.token !== "string" || si.token.length === 0) fail(step, "data.token missing or empty", si);
	if (si.token === su.token) fail(step, "sign-in returned the same session token as sign-up", si);
	if (!si.user || si.user.id !== userId) fail(step, "data.user.id differs from sign-up user id", si?.user);
	if (si.redirect !== false) fail(step, `data.redirect should be false without callbackURL, got ${JSON.stringify(si.redirect)}`, si);
	ok(step, `token received (redirect=${si.redirect})`);

	step = "set-auth-token";
	if (!authToken) fail(step, "sign-in response has no set-auth-token header (bearer plugin)");
	if (!authToken.startsWith(`${si.token}.`)) {
		fail(step, "set-auth-token is not '<session token>.<signature>'", { authToken, token: si.token });
	}
	ok(step, "signed bearer token received");

	const bearer = { auth: { type: "Bearer", token: authToken } };

	// 3. get-session with the bearer token
	step = "get-session";
	const sess = await call(step, () => client.getSession({ fetchOptions: bearer }));
	expectNoError(step, sess);
	if (!sess.data || !sess.data.session || !sess.data.user) fail(step, "expected {session, user}", sess.data);
	if (sess.data.session.userId !== userId) {
		fail(step, `session.userId (${sess.data.session.userId}) !== user.id (${userId})`, sess.data);
	}
	if (sess.data.user.email !== email) fail(step, "user.email mismatch", sess.data.user);
	if (sess.data.session.token !== si.token) fail(step, "session.token !== sign-in token", sess.data.session);
	ok(step, `session.userId === user.id (${userId})`);

	// 4. sign out with the bearer token
	step = "sign-out";
	const out = await call(step, () => client.signOut({ fetchOptions: bearer }));
	expectNoError(step, out);
	if (!out.data || out.data.success !== true) fail(step, "expected data.success === true", out.data);
	ok(step, "success === true");

	// 5. the session is gone
	step = "get-session-after-sign-out";
	const after = await call(step, () => client.getSession({ fetchOptions: bearer }));
	expectNoError(step, after);
	if (after.data !== null) fail(step, "expected data === null after sign-out", after.data);
	ok(step, "data === null");

	// 6. wrong password
	step = "sign-in-wrong-password";
	const bad = await call(step, () => client.signIn.email({ email, password: `${password}-wrong` }));
	if (!bad.error) fail(step, "expected an error, got success", bad.data);
	if (bad.error.status !== 401) fail(step, `expected status 401, got ${bad.error.status}`, bad.error);
	if (bad.error.code !== "INVALID_EMAIL_OR_PASSWORD") {
		fail(step, `expected code INVALID_EMAIL_OR_PASSWORD, got ${bad.error.code}`, bad.error);
	}
	if (bad.data !== null) fail(step, "expected data === null on error", bad.data);
	ok(step, `status 401, code ${bad.error.code}, message ${JSON.stringify(bad.error.message)}`);
}

main().then(
	() => {
		clearTimeout(timer);
		console.log("PASS: better-auth client flow");
		process.exit(0);
	},
	(e) => {
		console.error(`FAIL: unexpected exception: ${e?.stack ?? e}`);
		process.exit(1);
	},
);
