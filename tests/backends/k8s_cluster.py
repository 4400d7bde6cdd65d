"""A real Kubernetes control plane for the tests: etcd and kube-apiserver 1.20 on 127.0.0.1.

The API server is the one ``scripts/build-kube-apiserver`` builds from Debian's source package
(``scripts/setup --k8s``); etcd is Debian's ``etcd-server``. Both bind loopback only, on free
ports, with their data in the test's folder, and die with the test process. Authentication is by
token (an admin in system:masters for the test's own set-up and the node simulator) and by
service-account tokens (TokenRequest), with RBAC on: the fleet runs as a service account bound
to ``FLEET_RULES`` only. No controller-manager, scheduler or kubelet runs: the garbage collector
is absent, and ``k8s_node_sim.FakeNodeSimulator`` stands in for scheduler and kubelet.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import requests
import yaml
from kubernetes import client, config

from sandbox_cli import orphans
from tests.localfleet import free_port

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sandbox-fleet" / "k8s"

#: What the fleet needs in its namespace, and nothing more (docs/backends.md shows it as a Role).
FLEET_RULES = [
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["services"],
     "verbs": ["get", "list", "create", "delete", "patch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
     "verbs": ["get", "list", "create", "delete", "patch"]},
]


def apiserver_binary() -> str | None:
    """The built kube-apiserver: SANDBOX_FLEET_KUBE_APISERVER, else the one in the cache."""
    given = os.environ.get("SANDBOX_FLEET_KUBE_APISERVER")
    if given:
        return given if os.access(given, os.X_OK) else None
    found = sorted(glob.glob(str(CACHE / "*" / "kube-apiserver")))
    return found[-1] if found else None


def unavailable() -> str | None:
    """Why a local control plane cannot start here, or None."""
    if apiserver_binary() is None:
        return ("no kube-apiserver built (scripts/setup --k8s, or SANDBOX_FLEET_K8S=1, builds one "
                f"into {CACHE})")
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian's etcd-server; scripts/setup --k8s installs it)"
    return None


class LocalControlPlane:
    """etcd + kube-apiserver in ``folder`` for as long as the object lives (``stop`` ends them)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        self.admin_token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.node_port_range = (1024, 65535)  # the tests' free ports are nodePorts

    def start(self, timeout: float = 90) -> None:
        folder = self.folder
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            shutil.which("etcd"), "--data-dir", str(folder / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        key = folder / "service-accounts.key"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True, timeout=60)
        (folder / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        (folder / "certs").mkdir(exist_ok=True)
        self._spawn("kube-apiserver", [
            apiserver_binary(), "--etcd-servers", f"http://127.0.0.1:{etcd_client}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port), "--insecure-port", "0",
            "--cert-dir", str(folder / "certs"), "--anonymous-auth=false",
            "--token-auth-file", str(folder / "tokens.csv"), "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(key), "--service-account-signing-key-file", str(key),
            # Addresses no packet is ever sent to: no kube-proxy runs.
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--service-node-port-range", "{}-{}".format(*self.node_port_range),
            "--endpoint-reconciler-type", "none",  # its endpoint would be loopback: refused
            "--profiling=false", "--enable-priority-and-fairness=false", "--v", "1"])
        self.kubeconfig = self.write_kubeconfig("admin", self.admin_token)
        self.admin = config.new_client_from_config(config_file=str(self.kubeconfig))
        self._wait_ready(timeout)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes.append(subprocess.Popen(orphans.wrap(argv), stdout=log, stderr=log))
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[4]} exited ({proc.returncode}): "
                                       f"{self.log_tail()}")
            try:
                answer = requests.get(f"{self.url}/readyz", timeout=5, verify=str(self.certificate),
                                      headers={"Authorization": f"Bearer {self.admin_token}"})
                if answer.status_code == 200:
                    self._wait_default_service_account()
                    return
            except Exception as e:  # not listening yet, or not ready: why is in the message
                last = str(e)[:300]
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready in {timeout}s ({last}): {self.log_tail()}")

    def _wait_default_service_account(self) -> None:
        """The namespaces exist once the server's own start-up hooks ran."""
        core = client.CoreV1Api(self.admin)
        core.read_namespace("default", _request_timeout=5)

    def log_tail(self, lines: int = 15) -> str:
        path = self.folder / "kube-apiserver.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @property
    def certificate(self) -> Path:
        return self.folder / "certs" / "apiserver.crt"

    def write_kubeconfig(self, user: str, token: str) -> Path:
        """A kubeconfig for ``user`` trusting the server's own self-signed certificate."""
        path = self.folder / f"kubeconfig-{user}"
        certificate = self.certificate
        deadline = time.monotonic() + 60
        while not certificate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # written by the server in its first second
        cluster = {"server": self.url, "certificate-authority": str(certificate)}
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}]}))
        return path

    def namespace(self, name: str) -> None:
        """A namespace with its ``default`` service account (what the controller-manager, absent
        here, would make; the ServiceAccount admission plugin requires it for every pod)."""
        core = client.CoreV1Api(self.admin)
        core.create_namespace({"metadata": {"name": name}}, _request_timeout=10)
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}},
                                               _request_timeout=10)

    def service_account(self, namespace: str, name: str, rules: list[dict] | None) -> Path:
        """A service account bound to a Role with ``rules`` (None: no Role at all), and a
        kubeconfig holding a token the server issued for it (TokenRequest)."""
        core = client.CoreV1Api(self.admin)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}},
                                               _request_timeout=10)
        if rules is not None:
            rbac = client.RbacAuthorizationV1Api(self.admin)
            rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules},
                                        _request_timeout=10)
            rbac.create_namespaced_role_binding(namespace, {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
                _request_timeout=10)
        issued = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}},
            _request_timeout=10)
        return self.write_kubeconfig(f"{namespace}-{name}", issued.status.token)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.admin.close()
