// A real OpenID provider (the `oidc-provider` package) standing in for Google in portcullis's
// login tests. Listens on 127.0.0.1 (port from argv[2], default 0: any free port) and prints
// one JSON line `{"issuer": "http://127.0.0.1:PORT"}` once it serves.
//
// Accounts sign in through the provider's own login and consent forms (login = the account
// name, any password) and carry Google-shaped claims: email, email_verified, hd, name.
// RP-initiated logout (end_session_endpoint) is on: its confirmation form answers "yes, sign
// me out" by itself (a script submits it; without scripts, posting the form does).
//
// Beside the provider's own endpoints, a few test-only ones under /__test/ configure it and
// count what portcullis asks of it:
//   POST /__test/configure  {clients: [...], accounts: {name: claims}, logout?: false}
//                           rebuilds the provider with the same signing keys (clients are
//                           registered after portcullis has bound its port, which the
//                           redirect URI names); `logout: false` switches RP-initiated logout
//                           off, so discovery has no end_session_endpoint (as Google's)
//   POST /__test/rotate     a new signing key signs from now on; the old one is dropped
//   POST /__test/sign       {claims, header?}: a JWS signed with the current key (expired or
//                           wrongly addressed ID tokens for the refusal cases)
//   GET  /__test/hits       {path: count} of every request served
// and GET /tokeninfo?access_token=, shaped like Google's tokeninfo (aud, azp, sub, scope,
// exp, expires_in, email, email_verified as a string), answered from the provider's own
// access-token store.

import http from 'node:http';
import { generateKeyPair, exportJWK, SignJWT, calculateJwkThumbprint } from 'jose';
import Provider from 'oidc-provider';

// stdout carries only the issuer line; the provider's own notices go to stderr.
console.log = console.error;
console.info = console.error;

const port = Number(process.argv[2] || 0);
const hits = {};
let accounts = {};
let clients = [];
let logout = true;
let keys = [await newKey()];
let provider;
let issuer;

async function newKey() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  return jwk;
}

function build() {
  const p = new Provider(issuer, {
    clients,
    jwks: { keys },
    findAccount: async (ctx, id) => {
      const claims = accounts[id];
      if (!claims) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
    },
    claims: {
      openid: ['sub', 'hd'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    // Scope claims in the ID token even when an access token is issued, as Google does.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    cookies: { keys: ['portcullis-test-provider-cookie-key'] },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: logout, logoutSource },
    },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  p.proxy = false;
  return p;
}

// The provider's sign-out confirmation, answered "yes" (the person pressed the button).
async function logoutSource(ctx, form) {
  const yes = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign out</title></head>
<body><h1>Signing you out of the test provider</h1>${yes}
<script>document.forms[0].submit()</script></body></html>`;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function tokeninfo(req, res, url) {
  const token = url.searchParams.get('access_token') || '';
  const at = await provider.AccessToken.find(token);
  if (!at) return send(res, 400, { error: 'invalid_token', error_description: 'Invalid Value' });
  const claims = accounts[at.accountId] || {};
  const now = Math.floor(Date.now() / 1000);
  return send(res, 200, {
    azp: at.clientId,
    aud: at.clientId,
    sub: at.accountId,
    scope: at.scope,
    exp: String(at.exp),
    expires_in: String(at.exp - now),
    email: claims.email,
    email_verified: String(claims.email_verified === true),
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  hits[url.pathname] = (hits[url.pathname] || 0) + 1;
  try {
    if (url.pathname === '/__test/configure' && req.method === 'POST') {
      const body = await readJson(req);
      clients = body.clients || [];
      accounts = body.accounts || {};
      logout = body.logout !== false;
      provider = build();
      return send(res, 200, { ok: true });
    }
    if (url.pathname === '/__test/rotate' && req.method === 'POST') {
      keys = [await newKey()];
      provider = build();
      return send(res, 200, { kid: keys[0].kid });
    }
    if (url.pathname === '/__test/sign' && req.method === 'POST') {
      const { claims, header } = await readJson(req);
      const key = keys[0];
      const { importJWK } = await import('jose');
      const signer = await importJWK(key, 'RS256');
      const jws = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, ...(header || {}) })
        .sign(signer);
      return send(res, 200, { token: jws });
    }
    if (url.pathname === '/__test/hits') return send(res, 200, hits);
    if (url.pathname === '/tokeninfo') return await tokeninfo(req, res, url);
    return provider.callback()(req, res);
  } catch (e) {
    return send(res, 500, { error: String(e) });
  }
});

server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  provider = build();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The test harness closes stdin (or dies): stop with it.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
