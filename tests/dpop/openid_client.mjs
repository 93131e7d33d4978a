// An agent built on openid-client 6 (npm), independent of mandate's code: it discovers mandate's
// metadata, makes a DPoP key pair, exchanges a user's ID token for an app token with the
// library's DPoP handle (the library builds and signs every proof), and calls the app with it.
//
//   node openid_client.mjs ISSUER CLIENT SECRET SUBJECT_TOKEN AUDIENCE APP_URL
//
// Prints one JSON line: {"token_type", "access_token", "jkt", "app_status", "bearer_status"}.
import * as client from "openid-client";
import { calculateJwkThumbprint, exportJWK } from "jose";

const [issuer, clientId, secret, subjectToken, audience, appUrl] = process.argv.slice(2);
const config = await client.discovery(
  new URL(issuer),
  clientId,
  { client_secret: secret },
  client.ClientSecretBasic(secret),
  // RFC 8414 metadata (not OpenID Connect discovery); plain http on loopback in tests.
  { algorithm: "oauth2", execute: [client.allowInsecureRequests] },
);
const keyPair = await client.randomDPoPKeyPair("ES256");
const dpop = client.getDPoPHandle(config, keyPair);
const tokens = await client.genericGrantRequest(
  config,
  "urn:ietf:params:oauth:grant-type:token-exchange",
  {
    subject_token: subjectToken,
    subject_token_type: "urn:ietf:params:oauth:token-type:id_token",
    audience,
  },
  { DPoP: dpop },
);
const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey), "sha256");
const app = await client.fetchProtectedResource(
  config,
  tokens.access_token,
  new URL(appUrl),
  "GET",
  undefined,
  undefined,
  { DPoP: dpop },
);
// The same token without its proof, as a bearer token.
const bearer = await fetch(appUrl, { headers: { authorization: `Bearer ${tokens.access_token}` } });
console.log(
  JSON.stringify({
    token_type: tokens.token_type,
    access_token: tokens.access_token,
    jkt,
    app_status: app.status,
    bearer_status: bearer.status,
  }),
);
