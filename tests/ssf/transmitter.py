#!/usr/bin/env python3
"""An identity provider independent of mandate's code (jwcrypto, the Python standard library):
it makes its ES256 key, signs an ID token for a user, and pushes a CAEP session-revoked SET
for that user to mandate (RFC 8935), as an SSF transmitter would.

    transmitter.py keygen DIR                          -> DIR/key.json (private), DIR/jwks.json
    transmitter.py id-token DIR ISS SUB AUD            -> prints the ID token
    transmitter.py push DIR URL TOKEN ISS AUD SUB      -> prints the HTTP status and body
    transmitter.py serve-poll DIR TOKEN ISS AUD SUB    -> an RFC 8936 poll endpoint; prints its port
        POST /poll   (Bearer TOKEN) the receiver polls: {"sets": {...}}, and sends its acks
        GET  /arm    from now on, offer one session-revoked SET for SUB until it is acknowledged,
                     and one for "bob" signed with a key that is not the IdP's (a forgery)
        GET  /state  {"armed", "polls", "acked", "errors"}
"""
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

from jwcrypto import jwk, jwt

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def load(directory):
    with open(f"{directory}/key.json") as f:
        return jwk.JWK.from_json(f.read())


def sign(key, header, claims):
    token = jwt.JWT(header=header, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def main(argv):
    command = argv[1]
    if command == "keygen":
        directory = argv[2]
        key = jwk.JWK.generate(kty="EC", crv="P-256", kid="idp-ssf-1", use="sig", alg="ES256")
        with open(f"{directory}/key.json", "w") as f:
            f.write(key.export_private())
        with open(f"{directory}/jwks.json", "w") as f:
            f.write(json.dumps({"keys": [json.loads(key.export_public())]}))
        return 0
    if command == "id-token":
        directory, iss, sub, aud = argv[2:6]
        now = int(time.time())
        claims = {"iss": iss, "sub": sub, "aud": aud, "iat": now - 5, "exp": now + 600,
                  "jti": str(uuid.uuid4())}
        print(sign(load(directory), {"alg": "ES256", "kid": "idp-ssf-1", "typ": "JWT"}, claims))
        return 0
    if command == "push":
        directory, url, token, iss, aud, sub = argv[2:8]
        now = int(time.time())
        claims = {
            "iss": iss,
            "aud": aud,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "sub_id": {"format": "iss_sub", "iss": iss, "sub": sub},
            "events": {SESSION_REVOKED: {"event_timestamp": now, "initiating_entity": "admin",
                                         "reason_admin": {"en": "Lost laptop"}}},
        }
        body = sign(load(directory), {"alg": "ES256", "kid": "idp-ssf-1", "typ": "secevent+jwt"},
                    claims).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/secevent+jwt",
            "Authorization": f"Bearer {token}",
        })
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                print(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            print(error.code, error.read().decode())
        return 0
    if command == "serve-poll":
        directory, token, iss, aud, sub = argv[2:7]
        key = load(directory)
        state = {"armed": None, "forged": None, "polls": 0, "acked": [], "errors": {}}
        stranger = jwk.JWK.generate(kty="EC", crv="P-256", kid="idp-ssf-1", alg="ES256")
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with lock:
                    if self.path == "/arm":
                        now = int(time.time())
                        jti = str(uuid.uuid4())
                        claims = {
                            "iss": iss, "aud": aud, "iat": now, "jti": jti,
                            "sub_id": {"format": "iss_sub", "iss": iss, "sub": sub},
                            "events": {SESSION_REVOKED: {"event_timestamp": now}},
                        }
                        header = {"alg": "ES256", "kid": "idp-ssf-1", "typ": "secevent+jwt"}
                        state["armed"] = (jti, sign(key, header, claims))
                        forged_jti = str(uuid.uuid4())
                        forged = dict(claims, jti=forged_jti,
                                      sub_id={"format": "iss_sub", "iss": iss, "sub": "bob"})
                        state["forged"] = (forged_jti, sign(stranger, header, forged))
                        self.reply(200, {"jti": jti, "forged_jti": forged_jti})
                    elif self.path == "/state":
                        self.reply(200, {"armed": state["armed"] is not None,
                                         "polls": state["polls"], "acked": state["acked"],
                                         "errors": state["errors"]})
                    else:
                        self.reply(404, {})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.reply(401, {"err": "authentication_failed"})
                    return
                with lock:
                    state["polls"] += 1
                    state["acked"].extend(request.get("ack", []))
                    state["errors"].update(request.get("setErrs", {}))
                    sets = {}
                    for offered in (state["armed"], state["forged"]):
                        if offered is not None and offered[0] not in state["acked"] \
                                and offered[0] not in state["errors"]:
                            sets[offered[0]] = offered[1]
                self.reply(200, {"sets": sets, "moreAvailable": False})

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
