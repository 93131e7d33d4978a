#!/usr/bin/env python3
"""A DPoP client independent of mandate's code (jwcrypto and the Python standard library), as
an agent would be written from RFC 9449 alone: it keeps its own key, builds every proof by hand
(typ dpop+jwt, alg, jwk; jti, htm, htu, iat, and ath at resource servers), takes htu from the
authorization server's RFC 8414 metadata, and computes the RFC 7638 thumbprint it expects in
the tokens it gets.

    agent.py keygen FILE [ES256|EdDSA]           -> FILE (private JWK); prints its thumbprint
    agent.py pem FILE OUT                        -> OUT: the key as PKCS#8 PEM (a signing key)
    agent.py jwks FILE OUT                       -> OUT: {"keys": [public JWK]}
    agent.py token KEY|- BASE CLIENT SECRET FIELD=VALUE...
        -> POSTs the form to BASE's token endpoint with HTTP Basic and, unless KEY is '-', a DPoP
           proof by KEY; prints {"status": ..., "body": ...}
    agent.py call KEY|- SCHEME TOKEN URL [HTU]  -> GET URL with "Authorization: SCHEME TOKEN"
           and, unless KEY is '-', a proof naming the token (and HTU, the app's public URL, when
           URL is not it); prints {"status": ..., "challenge": ...}
    agent.py replay KEY TOKEN URL [HTU]          -> the same proof twice; prints both statuses
"""
import base64
import hashlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode


def load(path):
    with open(path) as f:
        return jwk.JWK.from_json(f.read())


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def proof(key, method, url, access_token=None):
    public = json.loads(key.export_public())
    public.pop("kid", None)
    alg = "EdDSA" if public["kty"] == "OKP" else "ES256"
    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
    token = jws.JWS(json_encode(claims))
    token.add_signature(
        key, alg=alg, protected=json_encode({"typ": "dpop+jwt", "alg": alg, "jwk": public})
    )
    return token.serialize(compact=True)


def token_endpoint(base):
    with urllib.request.urlopen(base + "/.well-known/oauth-authorization-server") as r:
        return json.loads(r.read())["token_endpoint"]


def send(request):
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def main(argv):
    command = argv[1]
    if command == "keygen":
        kty = "OKP" if len(argv) > 3 and argv[3] == "EdDSA" else "EC"
        key = jwk.JWK.generate(kty=kty, crv="Ed25519" if kty == "OKP" else "P-256")
        with open(argv[2], "w") as f:
            f.write(key.export_private())
        print(key.thumbprint())
    elif command == "pem":
        with open(argv[3], "wb") as f:
            f.write(load(argv[2]).export_to_pem(private_key=True, password=None))
    elif command == "jwks":
        key = load(argv[2])
        public = json.loads(key.export_public())
        public["kid"] = key.thumbprint()
        with open(argv[3], "w") as f:
            json.dump({"keys": [public]}, f)
    elif command == "token":
        key_path, base, client, secret = argv[2:6]
        form = dict(field.split("=", 1) for field in argv[6:])
        endpoint = token_endpoint(base)
        # Sent to where mandate listens; the proof names the endpoint its metadata gives.
        path = urllib.parse.urlsplit(endpoint).path
        request = urllib.request.Request(
            base + path, data=urllib.parse.urlencode(form).encode(), method="POST"
        )
        basic = base64.b64encode(f"{client}:{secret}".encode()).decode()
        request.add_header("Authorization", "Basic " + basic)
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        if key_path != "-":
            request.add_header("DPoP", proof(load(key_path), "POST", endpoint))
        status, body, _ = send(request)
        print(json.dumps({"status": status, "body": json.loads(body)}))
    elif command == "call":
        key_path, scheme, access_token, url = argv[2:6]
        htu = argv[6] if len(argv) > 6 else url
        request = urllib.request.Request(url, method="GET")
        request.add_header("Authorization", f"{scheme} {access_token}")
        if key_path != "-":
            request.add_header("DPoP", proof(load(key_path), "GET", htu, access_token))
        status, _, headers = send(request)
        print(json.dumps({"status": status, "challenge": headers.get("WWW-Authenticate")}))
    elif command == "replay":
        key_path, access_token, url = argv[2:5]
        htu = argv[5] if len(argv) > 5 else url
        same = proof(load(key_path), "GET", htu, access_token)
        statuses = []
        for _ in range(2):
            request = urllib.request.Request(url, method="GET")
            request.add_header("Authorization", f"DPoP {access_token}")
            request.add_header("DPoP", same)
            statuses.append(send(request)[0])
        print(json.dumps({"statuses": statuses}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
