#!/usr/bin/env python3
"""A Shared Signals receiver independent of mandate's code (jwcrypto, the Python standard
library), as an app would run one: it creates a push stream and a poll stream at mandate's
configuration endpoint (HTTP Basic as its resource server), receives pushed SETs (RFC 8935) on
its own HTTP endpoint, polls the other stream (RFC 8936) acknowledging what it verified, and
verifies every SET against mandate's published JWKS: typ secevent+jwt, signature, iss, aud, no
sub or exp, a jti.

    receiver.py run BASE ISSUER CLIENT SECRET AUD PORT OUT [PUSH_STREAM POLL_STREAM]

BASE is where mandate listens, ISSUER its issuer (the SETs' iss), CLIENT/SECRET the resource server's credentials, AUD its audience,
PORT the local port it receives pushes on, OUT a file it appends one JSON line to per verified
SET: {"via": "push"|"poll", "stream": ..., "claims": {...}}. Without stream ids it creates the
two streams; it prints "ready PUSH_STREAM POLL_STREAM" once it listens and polls.
"""
import base64
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request

from jwcrypto import jwk, jws

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def call(base, auth, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Basic " + auth)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=15) as response:
        text = response.read()
        return json.loads(text) if text else None


class Verifier:
    def __init__(self, base, issuer, aud):
        self.base, self.issuer, self.aud = base, issuer, aud
        self.keys = None

    def verify(self, token):
        if self.keys is None:
            with urllib.request.urlopen(self.base + "/jwks", timeout=5) as response:
                self.keys = jwk.JWKSet.from_json(response.read())
        signed = jws.JWS()
        signed.deserialize(token)
        header = signed.jose_header
        if header.get("typ") != "secevent+jwt":
            raise ValueError("typ is not secevent+jwt")
        if header.get("alg") in (None, "none") or header["alg"].startswith("HS"):
            raise ValueError("not an asymmetric signature")
        signed.verify(self.keys.get_key(header["kid"]), alg=header["alg"])
        claims = json.loads(signed.payload)
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if claims.get("iss") != self.issuer or self.aud not in auds:
            raise ValueError("wrong iss or aud")
        if "sub" in claims or "exp" in claims or not claims.get("jti"):
            raise ValueError("not an SSF SET")
        return claims


def main(argv):
    base, issuer, client, secret, aud, port, out = argv[2:9]
    auth = base64.b64encode(f"{client}:{secret}".encode()).decode()
    verifier = Verifier(base, issuer, aud)
    lock = threading.Lock()

    def record(via, stream, claims):
        with lock, open(out, "a") as f:
            f.write(json.dumps({"via": via, "stream": stream, "claims": claims}) + "\n")

    streams = {}

    class Push(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if self.headers.get("Authorization") != "Bearer receiver-push-token":
                self.send_response(401)
                self.end_headers()
                return
            try:
                claims = verifier.verify(body)
            except Exception as error:  # an RFC 8935 refusal
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"err": "invalid_request", "description": str(error)}).encode())
                return
            record("push", streams.get("push"), claims)
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Push)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    if len(argv) > 10:
        streams["push"], streams["poll"] = argv[9], argv[10]
    else:
        push = call(base, auth, "POST", "/ssf/streams", {
            "delivery": {"method": "urn:ietf:rfc:8935",
                         "endpoint_url": f"http://127.0.0.1:{port}/push",
                         "authorization_header": "Bearer receiver-push-token"},
            "events_requested": [SESSION_REVOKED]})
        poll = call(base, auth, "POST", "/ssf/streams", {
            "delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]})
        streams["push"], streams["poll"] = push["stream_id"], poll["stream_id"]
    print("ready", streams["push"], streams["poll"], flush=True)

    ack, errs = [], {}
    while True:
        try:
            answer = call(base, auth, "POST", f"/ssf/poll/{streams['poll']}",
                          {"returnImmediately": True, "ack": ack, "setErrs": errs})
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)  # mandate is down or restarting: ask again with the same acks
            continue
        ack, errs = [], {}
        for jti, token in answer["sets"].items():
            try:
                record("poll", streams["poll"], verifier.verify(token))
                ack.append(jti)
            except Exception as error:
                errs[jti] = {"err": "invalid_request", "description": str(error)}
        if not answer["sets"]:
            time.sleep(0.3)


if __name__ == "__main__":
    if len(sys.argv) < 9 or sys.argv[1] != "run":
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv)
