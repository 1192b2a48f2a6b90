"""BYOC on a real Kubernetes API server (etcd, kube-apiserver and kube-controller-manager built by
`scripts/tools`): the `DataPlane` CRD installs, the operator turns a `DataPlane` into the objects it
asks for, mints an enrolment token per replica from the control plane, reports status, and its finalizer
removes the data planes from the control plane when the resource is deleted. There is no kubelet: where a
Pod must run, the test runs the Pod's own command and arguments as a local process."""

import base64
import json
import os
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest
from adbc_driver_flightsql import dbapi as flight_sql

import kube
from conftest import THREE_APP_JOIN, start_sandbox
from services import AWS_ENV, Admin, Moto, Postgres, Process, free_port, stop_all, tls_pair

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts/omnisql-operator"


def run_operator(cluster: kube.Cluster, kubelet: "Kubelet") -> Process:
    """The operator's Pod, run by the kubelet with its service account's token, so it has exactly the
    permissions the chart grants."""
    pod = wait("operator pod", lambda: cluster.get("pods", "-l", "app.kubernetes.io/name=omnisql-operator")["items"])[0]
    token = cluster.kubectl("create", "token", pod["spec"]["serviceAccountName"]).stdout.strip()
    kubeconfig = str(cluster.kubeconfig_for("operator", token))
    return kubelet.run(pod["metadata"]["name"], "OmniSQL operator:", {"KUBECONFIG": kubeconfig})


def wait(what: str, check, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class Tofu:
    """OpenTofu with the omnisql provider built from `terraform/provider` and installed by `dev_overrides`
    (no registry, no network), in a folder of its own."""

    def __init__(self, work: pathlib.Path, admin: Admin):
        self.work = work
        plugins = work / "plugins"
        plugins.mkdir(parents=True)
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "build", "-o", str(plugins / "terraform-provider-omnisql"), "."], cwd=ROOT / "terraform/provider",
                       env=env, check=True, timeout=600)
        (work / "tofurc").write_text(
            'provider_installation {\n  dev_overrides { "registry.opentofu.org/omnisql/omnisql" = "%s" }\n  direct {}\n}\n' % plugins)
        self.env = {**os.environ, "TF_CLI_CONFIG_FILE": str(work / "tofurc"), "OMNISQL_ADMIN_URL": admin.url,
                    "OMNISQL_ADMIN_KEY": admin.key, "TF_IN_AUTOMATION": "1"}

    def run(self, *args: str) -> str:
        r = subprocess.run([str(kube.TOOLS / "tofu"), *args], cwd=self.work, env=self.env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"tofu {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def apply(self, apps: dict):
        (self.work / "main.tf").write_text(TOFU_CONFIG)
        self.run("apply", "-auto-approve", "-input=false",
                 "-var", f"github_url={apps['github']['base_url']}", "-var", f"github_token={apps['github']['credentials']['token']}",
                 "-var", f"salesforce_url={apps['salesforce']['base_url']}",
                 "-var", f"salesforce_id={apps['salesforce']['credentials']['client_id']}",
                 "-var", f"salesforce_secret={apps['salesforce']['credentials']['client_secret']}",
                 "-var", f"slack_url={apps['slack']['base_url']}", "-var", f"slack_token={apps['slack']['credentials']['token']}")
        self.vars = ["-var", "github_url=x", "-var", "github_token=x", "-var", "salesforce_url=x", "-var", "salesforce_id=x",
                     "-var", "salesforce_secret=x", "-var", "slack_url=x", "-var", "slack_token=x"]

    def output(self, name: str) -> str:
        return self.run("output", "-raw", name)

    def destroy(self):
        self.run("destroy", "-auto-approve", "-input=false", "-refresh=false", *self.vars)


TOFU_CONFIG = """
terraform {
  required_providers {
    omnisql = { source = "omnisql/omnisql" }
  }
}

variable "github_url" {}
variable "github_token" { sensitive = true }
variable "salesforce_url" {}
variable "salesforce_id" {}
variable "salesforce_secret" { sensitive = true }
variable "slack_url" {}
variable "slack_token" { sensitive = true }

resource "omnisql_tenant" "acme" {
  id     = "acme"
  name   = "Acme"
  region = "local"
}

resource "omnisql_connection" "github" {
  tenant         = omnisql_tenant.acme.id
  name           = "github"
  connector      = "github"
  options        = { base_url = var.github_url, orgs = "acme" }
  secret_options = { token = var.github_token }
}

resource "omnisql_connection" "salesforce" {
  tenant         = omnisql_tenant.acme.id
  name           = "salesforce"
  connector      = "salesforce"
  options        = { login_url = var.salesforce_url, client_id = var.salesforce_id }
  secret_options = { client_secret = var.salesforce_secret }
}

resource "omnisql_connection" "slack" {
  tenant         = omnisql_tenant.acme.id
  name           = "slack"
  connector      = "slack"
  options        = { base_url = var.slack_url }
  secret_options = { token = var.slack_token }
}

resource "omnisql_principal" "ann" {
  tenant = omnisql_tenant.acme.id
  id     = "ann"
  role   = "tenant_member"
}

resource "omnisql_api_key" "ann" {
  tenant    = omnisql_tenant.acme.id
  principal = omnisql_principal.ann.id
}

resource "omnisql_principal" "operator" {
  tenant  = "_platform"
  id      = "k8s-operator"
  kind    = "service_account"
  role    = "data_plane_operator"
  regions = [omnisql_tenant.acme.region]
}

resource "omnisql_api_key" "operator" {
  tenant    = "_platform"
  principal = omnisql_principal.operator.id
}

output "operator_key" {
  value     = omnisql_api_key.operator.key
  sensitive = true
}

output "member_key" {
  value     = omnisql_api_key.ann.key
  sensitive = true
}
"""


def data_plane_yaml(replicas: int, cp_grpc: int, cp_http: int, kms: str, ca_pem: str) -> str:
    ca = json.dumps(ca_pem)
    return f"""
apiVersion: omnisql.io/v1alpha1
kind: DataPlane
metadata: {{name: analytics, namespace: default}}
spec:
  region: local
  replicas: {replicas}
  version: 0.1.0
  controlPlane: {{url: "https://127.0.0.1:{cp_grpc}", adminUrl: "http://127.0.0.1:{cp_http}", credentialsSecret: omnisql-operator, caBundle: {ca}}}
  kms: {{provider: aws-kms, endpoint: "{kms}", region: us-east-1, credentialsSecret: aws-credentials}}
  flightSql: {{tlsSecret: flight-sql-tls}}
"""


desired_health_port = 8080


def condition(dp: dict, kind: str) -> dict:
    return next((c for c in dp.get("status", {}).get("conditions", []) if c["type"] == kind), {})


class Kubelet:
    """Runs a Pod's container as a local process, as a kubelet would: its command line with `$(VAR)`
    expanded, its environment (values, the pod's name, Secret keys), its volumes mapped into folders of the
    test (Secret volumes filled with the Secret's keys), and its `0.0.0.0:PORT` listeners moved to free
    loopback ports (several Pods share this host)."""

    def __init__(self, cluster: kube.Cluster, tmp: pathlib.Path):
        self.cluster, self.tmp, self.procs, self.uids, self.ports = cluster, tmp, {}, {}, {}

    def sync(self, selector: str = "app.kubernetes.io/instance=analytics"):
        """One pass of a kubelet: stop what was deleted, start what is new (each Pod's volume is kept
        across restarts, as a StatefulSet's claim is), mark started Pods Ready."""
        pods = {p["metadata"]["name"]: p for p in self.cluster.get("pods", "-l", selector)["items"]}
        for name in [n for n in self.procs if n.startswith("analytics-")]:
            pod = pods.get(name)
            if pod is None or pod["metadata"].get("deletionTimestamp") or pod["metadata"]["uid"] != self.uids[name]:
                self.procs.pop(name).stop()
                if pod is not None and pod["metadata"].get("deletionTimestamp"):
                    self.cluster.kubectl("delete", "pod", name, "--force", "--grace-period=0", check=False)
        for name, pod in pods.items():
            if name not in self.procs and not pod["metadata"].get("deletionTimestamp"):
                self.run(name, "Flight SQL on")
                self.uids[name] = pod["metadata"]["uid"]
                self.ready(name, self.ports[name][desired_health_port])

    def run(self, pod_name: str, ready_line: str, extra_env: dict | None = None) -> Process:
        pod = self.cluster.get("pod", pod_name)
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["omnisql"], container["command"]
        mounts = self.fill_volumes(pod_name)
        ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
        self.ports[pod_name] = ports
        env = {"HOSTNAME": pod_name}
        for e in container.get("env", []):
            source = e.get("valueFrom", {})
            if "value" in e:
                env[e["name"]] = e["value"]
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod_name
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[e["name"]] = base64.b64decode(self.cluster.get("secret", ref["name"])["data"][ref["key"]]).decode()
        for source in container.get("envFrom", []):
            data = self.cluster.get("secret", source["secretRef"]["name"]).get("data") or {}
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
        env.update(extra_env or {})
        args = []
        for a in container.get("args", []):
            a = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a)
            for path, local in mounts.items():
                a = a.replace(path, str(local))
            for port, local_port in ports.items():
                a = a.replace(f"0.0.0.0:{port}", f"127.0.0.1:{local_port}")
            args.append(a)
        proc = Process(args, ready_line, env)
        self.procs[pod_name] = proc
        return proc

    def fill_volumes(self, pod_name: str) -> dict:
        """Maps each volume mount of the Pod to a folder of the test and writes its Secret or ConfigMap
        keys there; called again, it writes what changed, as a kubelet updates a mounted Secret."""
        pod = self.cluster.get("pod", pod_name)
        container = pod["spec"]["containers"][0]
        root = self.tmp / pod_name
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts = {}
        for m in container.get("volumeMounts", []):
            local = root / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = local
            secret = volumes.get(m["name"], {}).get("secret")
            if secret:
                r = self.cluster.kubectl("get", "secret", secret["secretName"], "-o", "json", check=False)
                data = json.loads(r.stdout).get("data") or {} if r.returncode == 0 else {}
                for key, value in data.items():
                    (local / key).write_bytes(base64.b64decode(value))
            config_map = volumes.get(m["name"], {}).get("configMap")
            if config_map:
                for key, value in (self.cluster.get("configmap", config_map["name"]).get("data") or {}).items():
                    (local / key).write_text(value)
        return mounts

    def ready(self, pod_name: str, health: int):
        """Like a kubelet whose readiness probe passed: the Pod is marked Ready."""
        wait(f"{pod_name} /ready", lambda: http_status(f"http://127.0.0.1:{health}/ready") == 200, 30)
        patch = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                            "containerStatuses": [{"name": "data-plane", "ready": True, "restartCount": 0,
                                                   "image": "omnisql", "imageID": "", "started": True,
                                                   "state": {"running": {}}}]}}
        self.cluster.kubectl("patch", "pod", pod_name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))

    def stop(self):
        stop_all(*self.procs.values())


def join_rows(uri: str, key: str, ca_pem: str | None = None) -> set | None:
    """The join's rows from one data plane (over TLS trusting `ca_pem`), or None while it does not serve the
    tenant yet or the connection fails."""
    options = {"adbc.flight.sql.authorization_header": f"Bearer {key}"}
    if ca_pem:
        options["adbc.flight.sql.client_option.tls_root_certs"] = ca_pem
    try:
        with flight_sql.connect(uri, db_kwargs=options) as conn:
            with conn.cursor() as cur:
                cur.execute(THREE_APP_JOIN)
                return {tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()}
    except Exception:
        return None


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return 0


def test_operator_runs_data_planes_from_a_dataplane_resource(tmp_path):
    if not kube.tools_present():
        pytest.fail("the Kubernetes pieces are not built: run scripts/tools (scripts/test does)")
    timings: dict[str, float] = {}
    step = time.monotonic()

    def mark(name: str):
        nonlocal step
        timings[name] = round(time.monotonic() - step, 2)
        step = time.monotonic()

    cluster = kube.Cluster(tmp_path / "cluster")
    cp = operator = sandbox = moto = pg = None
    kubelet = Kubelet(cluster, tmp_path / "pods")
    try:
        mark("API server and controllers up")
        # The operator's chart installs the CRD and the operator's least-privilege RBAC and Deployment.
        cluster.helm("install", "omnisql-operator", str(CHART), "--namespace", "default")
        cluster.kubectl("wait", "--for=condition=Established", "crd/dataplanes.omnisql.io", "--timeout=30s")
        # The schema is enforced by the API server itself.
        bad = cluster.kubectl("apply", "-f", "-", check=False,
                              input="apiVersion: omnisql.io/v1alpha1\nkind: DataPlane\nmetadata: {name: x}\nspec: {replicas: two}\n")
        assert bad.returncode != 0 and "spec.replicas" in bad.stderr, bad.stderr
        mark("CRD installed")

        # The control plane from its chart, on PostgreSQL, sealing with a KMS key that the control plane
        # and the data planes both reach (moto).
        pg, moto = Postgres(), Moto()
        key_id = moto.create_key()
        cluster.kubectl("create", "secret", "generic", "omnisql-database", f"--from-literal=url={pg.url}")
        platform_key = "omk_" + os.urandom(20).hex()
        cluster.kubectl("create", "secret", "generic", "omnisql-bootstrap", f"--from-literal=apiKey={platform_key}")
        # The data planes reach it over TLS with a private CA (the DataPlane's caBundle).
        ca_pem, tls_crt, tls_key = tls_pair(tmp_path / "tls")
        cluster.kubectl("create", "secret", "tls", "omnisql-grpc-tls", f"--cert={tls_crt}", f"--key={tls_key}")
        # Flight SQL clients reach the data planes over TLS too, with a certificate of another CA.
        flight_ca, flight_crt, flight_key = tls_pair(tmp_path / "flight-tls")
        cluster.kubectl("create", "secret", "tls", "flight-sql-tls", f"--cert={flight_crt}", f"--key={flight_key}")
        cluster.kubectl("create", "secret", "generic", "aws-credentials",
                        *[f"--from-literal={k}={v}" for k, v in AWS_ENV.items() if k.startswith("AWS_") and "KEY" in k])
        cluster.helm("install", "omnisql", str(ROOT / "charts/omnisql-control-plane"), "--namespace", "default",
                     "--set", "replicas=1", "--set", f"kms.endpoint={moto.endpoint}", "--set", "kms.region=us-east-1",
                     "--set", f"kms.defaultKeyId={key_id}", "--set", "kms.credentialsSecret=aws-credentials",
                     "--set", "grpcTls.secretName=omnisql-grpc-tls", "--set", "bootstrapKeySecret=omnisql-bootstrap")
        cp_pod = wait("control-plane pod", lambda: cluster.get("pods", "-l", "app.kubernetes.io/name=omnisql-control-plane")["items"])
        cp_pod = cp_pod[0]["metadata"]["name"]
        cp = kubelet.run(cp_pod, "OmniSQL control plane:")
        http, grpc = kubelet.ports[cp_pod][8080], kubelet.ports[cp_pod][7070]
        admin = Admin(f"http://127.0.0.1:{http}", platform_key)
        assert admin.ok("GET", "/v1/me")["role"] == "platform_operator"
        mark("control plane started from its chart")
        # OpenTofu with the omnisql provider creates the tenant, its connections, a member's key and the
        # operator's own least-privilege credential (tokens and data planes of its region only).
        sandbox, apps = start_sandbox()
        tofu = Tofu(tmp_path / "tofu", admin)
        tofu.apply(apps)
        operator_key, key = tofu.output("operator_key"), tofu.output("member_key")
        mark("tofu apply")
        cluster.kubectl("create", "secret", "generic", "omnisql-operator", f"--from-literal=apiKey={operator_key}")
        operator = run_operator(cluster, kubelet)
        mark("control plane and operator started")

        # A spec the API server accepts but the operator cannot act on is a condition, not a crash loop.
        cluster.kubectl("apply", "-f", "-", input=data_plane_yaml(1, grpc, http, moto.endpoint, ca_pem).replace("region: local", "region: Local"))
        dp = wait("Degraded condition", lambda: (d := cluster.get("odp", "analytics")) and
                  condition(d, "Degraded").get("status") == "True" and d)
        assert condition(dp, "Degraded")["reason"] == "InvalidSpec" and "region" in condition(dp, "Degraded")["message"]
        assert cluster.kubectl("get", "statefulset", "analytics", check=False).returncode != 0
        mark("invalid spec reported")

        cluster.kubectl("apply", "-f", "-", input=data_plane_yaml(2, grpc, http, moto.endpoint, ca_pem))
        sts = wait("StatefulSet", lambda: cluster.kubectl("get", "statefulset", "analytics", "-o", "json", check=False).stdout)
        sts = json.loads(sts)
        owner = sts["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("DataPlane", "analytics", True)
        for kind in ("service/analytics", "service/analytics-pods", "serviceaccount/analytics", "pdb/analytics",
                     "networkpolicy/analytics"):
            assert cluster.get(kind)["metadata"]["ownerReferences"][0]["name"] == "analytics", kind
        assert "omnisql.io/deregister-data-planes" in cluster.get("odp", "analytics")["metadata"]["finalizers"]
        tokens = wait("enrolment tokens", lambda: (cluster.get("secret", "analytics-enrollment").get("data") or {}))
        assert sorted(tokens) == ["analytics-0", "analytics-1"]
        mark("objects applied, tokens minted")

        # Play the kubelet: run each Pod the StatefulSet creates, one at a time (OrderedReady).
        kubelet = Kubelet(cluster, tmp_path / "pods")
        wait("two pods running", lambda: kubelet.sync() or len(kubelet.procs) == 2, 60, every=0.5)
        mark("two replicas running")
        dp = wait("Ready", lambda: (d := cluster.get("odp", "analytics")) and
                  condition(d, "Ready").get("status") == "True" and d, 60)
        replicas = dp["status"]["replicas"]
        assert [r["pod"] for r in replicas] == ["analytics-0", "analytics-1"]
        assert all(r.get("dataPlaneId") and r.get("version") for r in replicas), replicas
        registered = admin.ok("GET", "/v1/data-planes")
        assert sorted(d["hostname"] for d in registered if d["region"] == "local") == ["analytics-0", "analytics-1"]
        assert dp["status"]["observedGeneration"] == dp["metadata"]["generation"]
        mark("Ready with both replicas enrolled")

        # Both replicas serve the tenant's 3-app join through Flight SQL over TLS, with the same answer.
        answers = {}
        for pod in ("analytics-0", "analytics-1"):
            uri = f"grpc+tls://127.0.0.1:{kubelet.ports[pod][50051]}"
            answers[pod] = wait(f"the join on {pod}", lambda: join_rows(uri, key, flight_ca), 30, every=0.5)
        assert len(answers["analytics-0"]) > 5 and answers["analytics-0"] == answers["analytics-1"], answers
        port = kubelet.ports["analytics-0"][50051]
        assert join_rows(f"grpc://127.0.0.1:{port}", key) is None, "plain text is not served on the TLS port"
        assert join_rows(f"grpc+tls://127.0.0.1:{port}", key, ca_pem) is None, "a client not trusting its CA refuses it"
        mark("3-app join served by both replicas over TLS")

        # cert-manager renews the certificate (a new CA here, to tell them apart): the kubelet updates the
        # mounted Secret and new connections get the new certificate without a restart.
        renewed_ca, renewed_crt, renewed_key = tls_pair(tmp_path / "flight-tls-renewed")
        renewed = cluster.kubectl("create", "secret", "tls", "flight-sql-tls", f"--cert={renewed_crt}", f"--key={renewed_key}",
                                  "--dry-run=client", "-o", "yaml").stdout
        cluster.kubectl("apply", "-f", "-", input=renewed)
        pid_before = kubelet.procs["analytics-0"].proc.pid
        kubelet.fill_volumes("analytics-0")
        assert wait("the renewed certificate served", lambda: join_rows(f"grpc+tls://127.0.0.1:{port}", key, renewed_ca), 30, every=0.5)
        assert join_rows(f"grpc+tls://127.0.0.1:{port}", key, flight_ca) is None, "the old certificate is no longer served"
        assert kubelet.procs["analytics-0"].proc.pid == pid_before, "no restart"
        mark("renewed Flight SQL certificate served without a restart")

        def converge(what: str, check, timeout: float = 90.0):
            def step():
                kubelet.sync()
                return check()
            return wait(what, step, timeout, every=0.5)

        def local_hostnames():
            return sorted(d["hostname"] for d in admin.ok("GET", "/v1/data-planes") if d["region"] == "local")

        # Scale up: the third replica gets a token, enrols, and the resource is Ready with three.
        cluster.kubectl("patch", "odp", "analytics", "--type=merge", "-p", '{"spec":{"replicas":3}}')
        converge("three ready", lambda: (d := cluster.get("odp", "analytics")) and d["status"].get("readyReplicas") == 3
                 and condition(d, "Ready").get("status") == "True")
        assert local_hostnames() == ["analytics-0", "analytics-1", "analytics-2"]
        mark("scaled to 3")

        # An operator restart mid-way changes nothing: it converges on what is there.
        for name in [n for n in kubelet.procs if n.startswith("omnisql-operator-")]:
            kubelet.procs.pop(name).stop()
        cluster.kubectl("patch", "odp", "analytics", "--type=merge", "-p", '{"spec":{"replicas":1}}')
        operator = run_operator(cluster, kubelet)
        # Scale down: the data planes of the replicas that went away leave the control plane.
        converge("scaled to 1", lambda: local_hostnames() == ["analytics-0"]
                 and condition(cluster.get("odp", "analytics"), "Ready").get("status") == "True")
        assert sorted(cluster.get("secret", "analytics-enrollment").get("data") or {}) == []
        mark("operator restarted, scaled to 1")

        # A new version rolls the pods; the replica keeps its identity (same data plane id) across it.
        before = cluster.get("odp", "analytics")["status"]["replicas"][0]["dataPlaneId"]
        cluster.kubectl("patch", "odp", "analytics", "--type=merge", "-p", '{"spec":{"version":"0.1.1"}}')
        converge("rolled to 0.1.1", lambda: (s := cluster.get("statefulset", "analytics")["status"]).get("updatedReplicas") == 1
                 and s.get("currentRevision") == s.get("updateRevision")
                 and condition(cluster.get("odp", "analytics"), "Ready").get("status") == "True")
        pod = cluster.get("pod", "analytics-0")
        assert pod["spec"]["containers"][0]["image"].endswith(":0.1.1")
        assert cluster.get("odp", "analytics")["status"]["replicas"][0]["dataPlaneId"] == before
        mark("rolled to a new version")

        # Deleting the resource deregisters every data plane before it goes.
        cluster.kubectl("delete", "odp", "analytics", "--wait=false")
        wait("DataPlane gone", lambda: cluster.kubectl("get", "odp", "analytics", check=False).returncode != 0, 60)
        assert [d for d in admin.ok("GET", "/v1/data-planes") if d["region"] == "local"] == []
        mark("deleted and deregistered")

        # `tofu destroy` leaves nothing: no tenant, no operator principal, its key dead.
        tofu.destroy()
        assert admin.call("GET", "/v1/tenants/acme")[0] == 404
        platform = admin.ok("GET", "/v1/tenants/_platform/principals")["items"]
        assert [p["id"] for p in platform if p["id"] == "k8s-operator"] == []
        assert Admin(admin.url, operator_key).call("GET", "/v1/data-planes")[0] == 401
        mark("tofu destroy")
    finally:
        print("step timings (s):", json.dumps(timings))
        for what in (("odp", "analytics"), ("statefulset", "analytics")):
            r = cluster.kubectl("get", *what, "-o", "json", check=False)
            if r.returncode == 0:
                print(what[0], "status:", json.dumps(json.loads(r.stdout).get("status"), indent=1))
        for name, proc in kubelet.procs.items():
            if "operator" in name or "omnisql-" in name:
                print(f"{name} log:\n" + "".join(proc.log[-20:]))
        stop_all(kubelet, sandbox, moto, pg)
        cluster.stop()


def test_charts_lint_and_validate_against_the_api_server(tmp_path):
    """Both charts pass `helm lint`, their values schemas refuse bad values, and what they render is
    accepted by a real API server (server-side dry run: every object checked against its schema)."""
    if not kube.tools_present():
        pytest.fail("the Kubernetes pieces are not built: run scripts/tools (scripts/test does)")
    cluster = kube.Cluster(tmp_path / "cluster")
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds/dataplanes.omnisql.io.yaml"))
        charts = {CHART: [], ROOT / "charts/omnisql-control-plane": ["--set", "kms.defaultKeyId=alias/omnisql"]}
        for chart, values in charts.items():
            assert "0 chart(s) failed" in cluster.helm("lint", str(chart), *values).stdout
            for extra in ([], ["--set", "watchAllNamespaces=true"] if chart == CHART else ["--set", "replicas=1", "--set", "grpcTls.secretName=tls"]):
                rendered = cluster.helm("template", "omnisql", str(chart), "--namespace", "default", *values, *extra).stdout
                applied = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
                assert "(server dry run)" in applied.stdout, applied.stdout
        refused = subprocess.run([str(kube.TOOLS / "helm"), "template", "x", str(CHART), "--set", "image.pullPolicy=Sometimes"],
                                 capture_output=True, text=True)
        assert refused.returncode != 0 and "pullPolicy" in refused.stderr, refused.stderr
    finally:
        cluster.stop()
