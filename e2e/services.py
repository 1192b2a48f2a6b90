"""Real third-party servers and OmniSQL processes for the control-plane end-to-end tests: a throwaway
PostgreSQL cluster, moto_server as the KMS, `omnisql control-plane` and `omnisql data-plane`."""

import glob
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import omnisql_binary

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


class Postgres:
    """initdb into a temporary folder (as user postgres when root), a server on a free port, and a
    database owned by a role that is not a superuser (so row-level security applies to it)."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: run scripts/test, which installs it")
        self.bin = pathlib.Path(bins[-1])
        # Under /tmp directly: user postgres cannot enter pytest's private temporary folders.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="omnisql-pg-"))
        root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if root else []
        if root:
            subprocess.run(["chown", "postgres:postgres", str(self.dir)], check=True)
        data = self.dir / "data"
        subprocess.run([*self.prefix, str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        self.port = free_port()
        self.proc = subprocess.Popen([*self.prefix, str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
                                      "-c", "listen_addresses=127.0.0.1", "-k", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        for sql in ["CREATE ROLE omnisql LOGIN PASSWORD 'omnisql' NOSUPERUSER NOBYPASSRLS",
                    "CREATE DATABASE omnisql OWNER omnisql"]:
            for _ in range(50):
                r = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                    "-d", "postgres", "-c", sql], capture_output=True, text=True)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"psql failed: {r.stderr}")
        self.url = f"postgres://omnisql:omnisql@127.0.0.1:{self.port}/omnisql"

    def psql(self, sql: str) -> str:
        """Runs SQL as the superuser in the omnisql database (to inspect what the store wrote)."""
        r = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-d", "omnisql", "-At", "-c", sql], capture_output=True, text=True, check=True)
        return r.stdout

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Moto:
    """moto_server as the KMS-compatible server, with one symmetric key per call of `create_key`."""

    def __init__(self):
        binary = pathlib.Path(sys.executable).parent / "moto_server"
        self.port = free_port()
        self.proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def create_key(self) -> str:
        import boto3
        kms = boto3.client("kms", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        return kms.create_key()["KeyMetadata"]["KeyId"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Process:
    """An omnisql server process whose log is kept; ready when a line contains `ready`."""

    def __init__(self, args: list[str], ready: str, env: dict | None = None):
        self.log: list[str] = []
        self.arrived: list[float] = []  # time.perf_counter() when each log line was read
        self.proc = subprocess.Popen([omnisql_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.arrived.append(time.perf_counter())
            self.log.append(line)
            if ready in line:
                break
        else:
            raise RuntimeError(f"omnisql {args[0]} exited before it was ready:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.arrived.append(time.perf_counter())
            self.log.append(line)

    def wait_for_line(self, text: str, after: int, timeout: float = 10.0) -> float:
        """When the first line containing `text` past line `after` arrived (time.perf_counter())."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for i in range(after, len(self.log)):
                if text in self.log[i]:
                    return self.arrived[i]
            time.sleep(0.0005)
        raise RuntimeError(f"no `{text}` in the log within {timeout} s")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def control_plane(http_port: int, grpc_port: int, database_url: str, kms_endpoint: str, key_id: str,
                  key_file: pathlib.Path) -> Process:
    return Process(["control-plane", "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                    "--database-url", database_url, "--kms", "aws-kms", "--kms-endpoint", kms_endpoint,
                    "--kms-region", "us-east-1", "--default-key-id", key_id, "--bootstrap-key-file", str(key_file)],
                   "OmniSQL control plane:", AWS_ENV)


def data_plane(grpc_port: int, flight_port: int, state: pathlib.Path, kms_endpoint: str,
               enrollment_token: str | None = None) -> Process:
    args = ["data-plane", "--control-plane", f"http://127.0.0.1:{grpc_port}", "--state-dir", str(state),
            "--flight-addr", f"127.0.0.1:{flight_port}", "--kms", "aws-kms", "--kms-endpoint", kms_endpoint,
            "--kms-region", "us-east-1"]
    if enrollment_token:
        args += ["--enrollment-token", enrollment_token]
    return Process(args, "Flight SQL on", AWS_ENV)


class Admin:
    """The admin REST API over HTTP."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read()
                return resp.status, (json.loads(text) if text else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def ok(self, method: str, path: str, body=None) -> dict:
        status, answer = self.call(method, path, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}"
        return answer


def stop_all(*things):
    """Stops OmniSQL processes, servers and plain subprocesses, in the order given; None is skipped."""
    for t in things:
        if t is None:
            continue
        if isinstance(t, subprocess.Popen):
            t.terminate()
            t.wait(timeout=20)
        else:
            t.stop()


def tls_pair(tmp: pathlib.Path) -> tuple[str, pathlib.Path, pathlib.Path]:
    """A private CA (its PEM) and a certificate for 127.0.0.1 it signed, written to `tmp` as `tls.crt` and
    `tls.key` (the keys of a `kubernetes.io/tls` Secret)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omnisql e2e CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM).decode(), tmp / "tls.crt", tmp / "tls.key"


def get_json(url: str, headers: dict) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"user-agent": "e2e", **headers}), timeout=30) as r:
        return json.loads(r.read())


def raw_salesforce(dev, soql: str) -> list[dict]:
    """Every record of a SOQL query, straight from the sandbox's Salesforce API (for oracles)."""
    sf = dev.app("salesforce")
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": sf["credentials"]["client_id"],
                                   "client_secret": sf["credentials"]["client_secret"]}).encode()
    with urllib.request.urlopen(urllib.request.Request(sf["base_url"] + "/services/oauth2/token", data=form), timeout=30) as r:
        token = json.loads(r.read())
    headers = {"authorization": f"Bearer {token['access_token']}"}
    body = get_json(f"{token['instance_url']}/services/data/v62.0/query?q={urllib.parse.quote(soql)}", headers)
    records = body["records"]
    while body.get("nextRecordsUrl"):
        body = get_json(token["instance_url"] + body["nextRecordsUrl"], headers)
        records += body["records"]
    return records


class OidcIssuer:
    """A real OIDC issuer on a free port: serves its discovery document and JWKS over HTTP, and signs ES256
    tokens with keys it may publish or withdraw (a rotation); counts key-set requests. It also runs the
    browser flow (authorization code with PKCE `S256`): `/authorize` signs in whoever `login` names (its
    claims) without asking, as if the browser had a session there, or answers `access_denied` when `login` is
    None; `/token` redeems each code once, for the client, redirect URI and verifier it was issued to."""

    def __init__(self):
        import http.server

        self.keys = {}
        self.published = []
        self.jwks_requests = 0
        self.login: dict | None = None
        self.codes: dict[str, dict] = {}
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                            "authorization_endpoint": issuer.url + "/authorize", "token_endpoint": issuer.url + "/token"}
                elif url.path == "/jwks":
                    issuer.jwks_requests += 1
                    body = {"keys": [issuer.jwk(kid) for kid in issuer.published]}
                elif url.path == "/authorize":
                    self.send_response(302)
                    self.send_header("location", issuer.authorize(dict(urllib.parse.parse_qsl(url.query))))
                    self.end_headers()
                    return
                else:
                    self.send_error(404)
                    return
                self.answer(200, body)

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["content-length"] or 0)).decode()))
                if self.path != "/token":
                    self.send_error(404)
                    return
                try:
                    self.answer(200, issuer.redeem(form))
                except ValueError as e:
                    self.answer(400, {"error": "invalid_grant", "error_description": str(e)})

            def answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def authorize(self, q: dict) -> str:
        """Where `/authorize` sends the browser: back to the client with a code, or with an error."""
        def back(**params):
            return q["redirect_uri"] + "?" + urllib.parse.urlencode({**params, "state": q.get("state", "")})

        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return back(error="invalid_request", error_description="code flow with PKCE S256 only")
        if self.login is None:
            return back(error="access_denied", error_description="the user declined")
        code = os.urandom(16).hex()
        self.codes[code] = {**q, "claims": dict(self.login)}
        return back(code=code)

    def redeem(self, form: dict) -> dict:
        """`/token`: an ID token for a code, once, if the client, redirect URI and verifier match."""
        import base64
        import hashlib

        pending = self.codes.pop(form.get("code", ""), None)
        if pending is None or form.get("grant_type") != "authorization_code":
            raise ValueError("unknown or already redeemed code")
        if (pending["client_id"], pending["redirect_uri"]) != (form.get("client_id"), form.get("redirect_uri")):
            raise ValueError("the code was issued to another client or redirect URI")
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != pending["code_challenge"]:
            raise ValueError("PKCE verification failed")
        kid = self.published[-1]
        token = self.token(kid, audience=pending["client_id"], nonce=pending["nonce"], **pending["claims"])
        return {"access_token": "opaque", "token_type": "Bearer", "expires_in": 300, "id_token": token}

    def new_key(self, kid: str, publish: bool = True):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict:
        numbers = self.keys[kid].public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": _b64url(numbers.x.to_bytes(32, "big")), "y": _b64url(numbers.y.to_bytes(32, "big"))}

    def token(self, kid: str, audience: str = "omnisql", ttl: int = 300, **claims) -> str:
        """A token signed with key `kid`, for `audience`, valid for `ttl` seconds (negative: expired)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        payload = {"iss": self.url, "aud": audience, "iat": now, "nbf": now - 5, "exp": now + ttl, **claims}
        header = {"alg": "ES256", "typ": "JWT", "kid": kid}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(payload).encode())
        r, s = decode_dss_signature(self.keys[kid].sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self):
        self.server.shutdown()


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
