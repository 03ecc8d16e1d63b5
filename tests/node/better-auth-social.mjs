#!/usr/bin/env node
// Social sign-in with the official better-auth client (`signIn.social`) against a server
// whose OAuth provider is a fake on loopback: the client asks for the provider URL, the
// "browser" (fetch with a cookie header, since Node has no jar) follows it to the provider
// and back to /api/auth/callback/google, and the session cookie set there must work with
// `getSession`.
//
// Usage: node better-auth-social.mjs <baseURL> <callbackURL>
// Prints one JSON line: {userId, email, callbackURL (the URL we were sent back to),
// providerCallback (the provider's redirect, for replay), stateCookie}.
// Exit status: 0 when every step passes, 1 on the first failure or after a 10 s timeout.

import { createAuthClient } from "better-auth/client";

const TIMEOUT_MS = 10_000;
const [baseURL, callbackURL] = process.argv.slice(2);
if (!baseURL || !callbackURL) {
	console.error("usage: node better-auth-social.mjs <baseURL> <callbackURL>");
	process.exit(2);
}
const origin = new URL(baseURL).origin;
setTimeout(() => {
	console.error(`FAIL: overall timeout of ${TIMEOUT_MS / 1000}s exceeded`);
	process.exit(1);
}, TIMEOUT_MS).unref();

function fail(step, message, detail) {
	console.error(`FAIL [${step}]: ${message}`);
	if (detail !== undefined) console.error(`  detail: ${JSON.stringify(detail)}`);
	process.exit(1);
}

// "name=value" pairs of every Set-Cookie on a response.
function cookiePairs(response) {
	return response.headers.getSetCookie().map((c) => c.split(";")[0]);
}

let setCookies = [];
const client = createAuthClient({
	baseURL,
	fetchOptions: {
		headers: { origin },
		onResponse(context) {
			setCookies = cookiePairs(context.response);
		},
	},
});

// 1. The client asks for the provider URL.
const res = await client.signIn.social({ provider: "google", callbackURL });
if (res.error) fail("sign-in/social", `error ${res.error.status} ${res.error.code}`, res.error);
if (res.data?.redirect !== true || typeof res.data?.url !== "string")
	fail("sign-in/social", "expected {url, redirect: true}", res.data);
const stateCookie = setCookies.find((c) => c.startsWith("better-auth.state="));
if (!stateCookie) fail("sign-in/social", "no state cookie", setCookies);

// 2. The browser goes to the provider, which sends it back with a code.
const atProvider = await fetch(res.data.url, { redirect: "manual" });
const providerCallback = atProvider.headers.get("location");
if (atProvider.status !== 302 || !providerCallback)
	fail("provider", `expected a redirect, got ${atProvider.status}`);

// 3. Back at the server: signed in and sent to callbackURL.
const back = await fetch(providerCallback, { redirect: "manual", headers: { cookie: stateCookie } });
const location = back.headers.get("location");
if (back.status !== 302) fail("callback", `expected 302, got ${back.status}: ${await back.text()}`);
const session = cookiePairs(back).find((c) => c.startsWith("better-auth.session_token="));
if (!session) fail("callback", "no session cookie", cookiePairs(back));

// 4. The cookie is a working session for the client.
const me = await client.getSession({ fetchOptions: { headers: { cookie: session } } });
if (me.error || !me.data?.user) fail("get-session", "no session", me);

console.log(
	JSON.stringify({
		userId: me.data.user.id,
		email: me.data.user.email,
		emailVerified: me.data.user.emailVerified,
		callbackURL: location,
		providerCallback,
		stateCookie,
	}),
);
process.exit(0);
