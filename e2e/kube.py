"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager, built by
`scripts/tools`, started with generated keys and a static admin token. There is no kubelet: Pods are
created by the controllers but never run unless a test runs them itself."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request
import ssl

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = pathlib.Path(os.environ.get("OMNISQL_TOOLS_DIR", "/var/tmp/omnisql-tools")) / "bin"
ADMIN_TOKEN = "omnisql-e2e-admin-token"


def tools_present() -> bool:
    return all((TOOLS / t).exists() for t in ("etcd", "kube-apiserver", "kube-controller-manager", "helm"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_account_key(path: pathlib.Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


class Cluster:
    """etcd + kube-apiserver + kube-controller-manager in `tmp`, stopped by `stop()`."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.timings: dict[str, float] = {}
        started = time.monotonic()
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [str(TOOLS / "etcd"), "--data-dir", str(tmp / "etcd"),
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                             "--log-level", "error"])
        certs = tmp / "certs"
        certs.mkdir()
        service_account_key(certs / "sa.key")
        (certs / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._spawn("kube-apiserver", [
            str(TOOLS / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port), "--cert-dir", str(certs),
            "--token-auth-file", str(certs / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(certs / "sa.key"),
            "--service-account-signing-key-file", str(certs / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            # A loopback advertise address makes the endpoint reconciler loop.
            "--endpoint-reconciler-type", "none",
            "--enable-priority-and-fairness=false",
        ])
        self._wait_ready()
        self.timings["apiserver ready (s)"] = round(time.monotonic() - started, 2)
        self.kubeconfig = self.kubeconfig_for("admin", ADMIN_TOKEN)
        self._spawn("kube-controller-manager", [
            str(TOOLS / "kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--service-account-private-key-file", str(certs / "sa.key"),
            "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--controllers", "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-persistentvolume-binder",
        ])

    def kubeconfig_for(self, user: str, token: str) -> pathlib.Path:
        """A kubeconfig that authenticates with `token` (the admin's, or a service account's)."""
        path = self.tmp / f"kubeconfig-{user}"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user, "namespace": "default"}}],
        }))
        return path

    def helm(self, *args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([str(TOOLS / "helm"), "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "HELM_CACHE_HOME": str(self.tmp / "helm"),
                                                        "HELM_CONFIG_HOME": str(self.tmp / "helm"),
                                                        "HELM_DATA_HOME": str(self.tmp / "helm")})
        if r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {r.stderr}")
        return r

    def _spawn(self, name: str, argv: list[str]):
        log = open(self.tmp / f"{name}.log", "w")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def _wait_ready(self, timeout_s: float = 60):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited: " + self.log_tail(pathlib.Path(p.args[0]).name))
            time.sleep(0.2)
        raise RuntimeError("kube-apiserver not ready: " + self.log_tail("kube-apiserver"))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.tmp / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        kubectl = shutil.which("kubectl") or "kubectl"
        r = subprocess.run([kubectl, "--kubeconfig", str(self.kubeconfig), *args], input=input, capture_output=True,
                           text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {r.stderr}")
        return r

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
