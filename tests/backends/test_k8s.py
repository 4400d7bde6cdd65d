"""Kubernetes: the backend contract against a real kube-apiserver, with pods run by a TEST-ONLY
node simulator, plus what only Kubernetes has (object names, ownership, RBAC, nodePorts, policy).

Real here: kube-apiserver 1.20.2 (validation, defaulting, nodePort allocation and its conflicts,
watches, RBAC with a service-account token, graceful deletion) and etcd, and the official client
on the wire. Simulated by ``k8s_node_sim.FakeNodeSimulator``: scheduler, kubelet, kube-proxy and
image pulls (Docker runs the pods, published on 127.0.0.1). Not running: controller-manager
(no garbage collector), CNI (NetworkPolicies are checked by the server, enforced by nothing).

Needs a built kube-apiserver and etcd (``scripts/setup --k8s``). Without them these tests skip,
saying so; under CI or SANDBOX_FLEET_REQUIRE_DOCKER they fail (SANDBOX_FLEET_K8S=0 opts out).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backends.base import LABEL_FLEET, LABEL_NAME
from sandbox_core.errors import BackendError, BadRequest, PortTaken, SettingsError
from sandbox_core.settings import parse_settings

from . import k8s_cluster
from .contract import REQUIRE_DOCKER, BackendContract, docker_unavailable

pytestmark = pytest.mark.docker

K8S_WANTED = os.environ.get("SANDBOX_FLEET_K8S", "1") != "0"
REPO = Path(__file__).resolve().parents[2]


def k8s_unavailable() -> str | None:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        return "the kubernetes client is not installed (pip install -e '.[k8s]')"
    return k8s_cluster.unavailable() or docker_unavailable()


def skip_or_fail(reason: str) -> None:
    if REQUIRE_DOCKER and K8S_WANTED:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Cluster:
    plane: k8s_cluster.LocalControlPlane
    namespace: str
    kubeconfig: Path  # the fleet's service account, bound to FLEET_RULES only
    sim: object  # FakeNodeSimulator

    def settings(self, prefix: str, workdir: Path, **changes: str):
        return parse_settings({
            "CONTAINER_DEPLOYMENT": "k8s", "CONTAINER_PREFIX_KEY": prefix,
            "FLEET_HOST_NAME": "contract-host", "DEFAULT_MOUNT_DIR": str(workdir / "mounts"),
            "KUBECONFIG_PATH": str(self.kubeconfig), "K8S_NAMESPACE": self.namespace,
            **changes})

    def objects(self, object_name: str) -> dict[str, list[str]]:
        """The pods, services and policies that carry a sandbox's object label (as admin)."""
        return self._objects(f"sandbox-fleet.io/sandbox={object_name}")

    def objects_of_prefix(self, prefix: str) -> dict[str, list[str]]:
        """Every pod, service and policy labelled with a fleet's prefix (as admin)."""
        from backends.k8s_objects import selector

        return self._objects(selector({LABEL_FLEET: prefix}))

    def _objects(self, query: str) -> dict[str, list[str]]:
        from kubernetes import client

        core = client.CoreV1Api(self.plane.admin)
        net = client.NetworkingV1Api(self.plane.admin)
        found = {
            "pods": core.list_namespaced_pod(self.namespace, label_selector=query).items,
            "services": core.list_namespaced_service(self.namespace, label_selector=query).items,
            "policies": net.list_namespaced_network_policy(self.namespace, label_selector=query).items,
        }
        return {kind: [o.metadata.name for o in items] for kind, items in found.items() if items}


@pytest.fixture(scope="session")
def k8s_cluster_env(tmp_path_factory) -> Iterator[Cluster]:
    """etcd + kube-apiserver on 127.0.0.1, a namespace, the fleet's service account and Role,
    and the fake node, for the whole session."""
    reason = k8s_unavailable()
    if reason:
        skip_or_fail(reason)
    from .k8s_node_sim import FakeNodeSimulator

    folder = tmp_path_factory.mktemp("k8s")
    plane = k8s_cluster.LocalControlPlane(folder)
    try:
        plane.start()
        namespace = f"sf-test-{secrets.token_hex(3)}"
        plane.namespace(namespace)
        kubeconfig = plane.service_account(namespace, "sandbox-fleet", k8s_cluster.FLEET_RULES)
        sim = FakeNodeSimulator(plane.admin, namespace, folder / "node").start()
        try:
            yield Cluster(plane, namespace, kubeconfig, sim)
        finally:
            sim.stop()
    finally:
        plane.stop()


class TestK8sBackend(BackendContract):
    deployment = "k8s"
    cluster: Cluster

    def unavailable(self) -> str | None:
        return k8s_unavailable()

    def required(self) -> bool:
        return REQUIRE_DOCKER and K8S_WANTED

    @pytest.fixture(scope="class")
    def workdir(self, tmp_path_factory, k8s_cluster_env) -> Path:
        type(self).cluster = k8s_cluster_env
        return tmp_path_factory.mktemp("contract-k8s")

    def make_backend(self, settings, workdir: Path):
        from backends.k8s import K8sBackend

        # hostpath: the contract shares /workspace and read-only mounts with the host
        return K8sBackend(settings.replace(
            KUBECONFIG_PATH=str(self.cluster.kubeconfig), K8S_NAMESPACE=self.cluster.namespace,
            K8S_WORKSPACE="hostpath"))

    def limits_of(self, backend, container_id):
        """What the fake node applied, from the limits the API server stored in the pod."""
        host_config = self.cluster.sim.container_of(container_id).attrs["HostConfig"]
        return host_config["Memory"] or None, (host_config["NanoCpus"] / 1e9) or None

    # -- Kubernetes' own -----------------------------------------------------------------------

    def test_objects_have_valid_names_owners_and_a_restricted_pod(self, backend, shared):
        from kubernetes import client

        from backends.k8s_objects import object_name

        name = shared.container.id
        assert name == object_name(shared.spec.name) and len(name) <= 55
        assert "_" in shared.spec.name and shared.container.name == shared.spec.name
        core = client.CoreV1Api(self.cluster.plane.admin)
        pod = core.read_namespaced_pod(name, self.cluster.namespace)
        ready = [c.status for c in pod.status.conditions if c.type == "Ready"]
        assert ready == ["True"] and pod.spec.node_name == self.cluster.sim.node
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
        container = pod.spec.containers[0]
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
        assert container.security_context.capabilities.add == ["NET_BIND_SERVICE"]
        assert container.readiness_probe.http_get.path == "/fastapi/healthz"
        service = core.read_namespaced_service(f"{name}-service", self.cluster.namespace)
        assert service.spec.type == "NodePort"
        assert service.spec.ports[0].node_port == shared.spec.host_port
        assert [(o.kind, o.uid) for o in service.metadata.owner_references] == [("Pod", pod.metadata.uid)]
        policy = client.NetworkingV1Api(self.cluster.plane.admin).read_namespaced_network_policy(
            name, self.cluster.namespace)
        assert policy.spec.policy_types == ["Ingress", "Egress"]
        assert [o.uid for o in policy.metadata.owner_references] == [pod.metadata.uid]
        assert policy.spec.ingress[0].ports[0].port == 80
        docker_host = self.cluster.sim.container_of(name).attrs["HostConfig"]
        assert docker_host["CapDrop"] == ["ALL"] and "no-new-privileges" in docker_host["SecurityOpt"]

    def test_a_taken_node_port_is_port_taken_and_leaves_nothing(self, backend, shared, make_spec):
        spec = make_spec(host_port=shared.spec.host_port)
        with pytest.raises(PortTaken):
            backend.create(spec)
        from backends.k8s_objects import object_name

        assert self.cluster.objects(object_name(spec.name)) == {}

    def test_a_missing_image_leaves_no_pod_service_or_policy(self, backend, make_spec):
        from backends.k8s_objects import object_name

        spec = make_spec(image="agentscope/runtime-sandbox-no-such-type:latest")
        with pytest.raises(BadRequest) as caught:
            backend.create(spec)
        assert "cannot be pulled" in caught.value.detail and "ErrImagePull" in caught.value.detail
        assert self.cluster.objects(object_name(spec.name)) == {}

    def test_emptydir_workspace_by_default(self, backend, make_spec, workdir, prefix):
        from backends.k8s import K8sBackend

        settings = self.cluster.settings(prefix, workdir)
        own = K8sBackend(settings)
        spec = make_spec()
        try:
            container = own.create(spec)
            pod = self.cluster.sim.core.read_namespaced_pod(container.id, self.cluster.namespace)
            volume = next(v for v in pod.spec.volumes if v.name == "workspace")
            assert volume.empty_dir is not None and volume.host_path is None
            from .contract import Sandbox

            sandbox = Sandbox(spec, container)
            sandbox.wait_ready()
            assert sandbox.shell("echo in > /workspace/x && cat /workspace/x")[0] == "in\n"
            assert not (Path(spec.workspace) / "x").exists()
        finally:
            own.remove(spec.name)
            own.close()

    def test_readonly_mounts_need_hostpath_workspaces(self, workdir, prefix):
        from backends.k8s import K8sBackend

        settings = self.cluster.settings(prefix, workdir, READONLY_MOUNTS='{"/etc": "/mnt/etc"}')
        with pytest.raises(SettingsError, match="READONLY_MOUNTS cannot be honoured"):
            K8sBackend(settings)

    def test_pod_ip_access_mode_makes_no_service(self, make_spec, workdir, prefix):
        from backends.k8s import K8sBackend
        from backends.k8s_objects import object_name

        own = K8sBackend(self.cluster.settings(prefix, workdir, K8S_ACCESS_MODE="podip"))
        spec = make_spec()
        try:
            container = own.create(spec)
            assert container.url.startswith("http://127.0.") and container.url.endswith(":80")
            assert "services" not in self.cluster.objects(container.id)
            assert own.inspect(container.id).url == container.url
            answer = requests.get(f"{container.url}/fastapi/healthz", timeout=5,
                                  headers={"Authorization": f"Bearer {spec.environment['SECRET_TOKEN']}"})
            assert answer.status_code == 200
        finally:
            own.remove(spec.name)
            own.close()
        assert self.cluster.objects(object_name(spec.name)) == {}

    def test_rbac_denial_is_a_clear_error(self, make_spec, workdir, prefix):
        from backends.k8s import K8sBackend

        plane, namespace = self.cluster.plane, self.cluster.namespace
        nothing = plane.service_account(namespace, f"no-role-{secrets.token_hex(2)}", None)
        with pytest.raises(SettingsError) as caught:
            K8sBackend(self.cluster.settings(prefix, workdir, KUBECONFIG_PATH=str(nothing)))
        assert "RBAC does not let the fleet list pods" in caught.value.detail
        assert namespace in caught.value.detail and "docs/backends.md" in caught.value.detail
        # Pods but no NetworkPolicies: the create stops before any pod exists.
        pods_only = plane.service_account(namespace, f"pods-only-{secrets.token_hex(2)}",
                                          k8s_cluster.FLEET_RULES[:2])
        own = K8sBackend(self.cluster.settings(prefix, workdir, KUBECONFIG_PATH=str(pods_only)))
        spec = make_spec()
        try:
            with pytest.raises(BackendError) as caught:
                own.create(spec)
            assert "RBAC does not let the fleet create the network policy" in caught.value.detail
        finally:
            own.close()
        from backends.k8s_objects import object_name

        assert self.cluster.objects(object_name(spec.name)) == {}

    def test_a_create_killed_midway_is_found_by_labels_and_removed(self, backend, make_spec,
                                                                   prefix):
        """A worker SIGKILLed while its pod starts: reconcile lists the leftovers by the fleet's
        labels and removes pod, Service and policy (there is no garbage collector here)."""
        from backends.k8s_objects import object_name

        spec = make_spec()
        name = object_name(spec.name)
        script = textwrap.dedent(f"""
            import sys
            from backends.base import ContainerSpec
            from backends.k8s import K8sBackend
            from sandbox_core.settings import parse_settings
            settings = parse_settings({{
                "CONTAINER_DEPLOYMENT": "k8s", "CONTAINER_PREFIX_KEY": {prefix!r},
                "KUBECONFIG_PATH": {str(self.cluster.kubeconfig)!r},
                "K8S_NAMESPACE": {self.cluster.namespace!r}, "FLEET_CREATE_TIMEOUT": "120"}})
            backend = K8sBackend(settings)
            print("ready", flush=True)
            backend.create(ContainerSpec(name={spec.name!r}, image={spec.image!r},
                                         host_port={spec.host_port}, environment={{}},
                                         labels={spec.labels!r}))
        """)
        # Killed as soon as its pod exists: its Service may or may not have been made yet.
        child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            assert self._wait(lambda: "pods" in self.cluster.objects(name)), child.stderr.read()
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        leftovers = backend.list({LABEL_FLEET: prefix, LABEL_NAME: spec.name})
        assert [c.id for c in leftovers] == [name]
        backend.remove(leftovers[0].id)
        assert self.cluster.objects(name) == {}

    def _wait(self, predicate, timeout: float = 30):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False


# -- a whole fleet on Kubernetes --------------------------------------------------------------

def _texts(result: dict, kind: str) -> list[str]:
    return [c["text"] for c in result["content"] if c.get("description") == kind]


def _fleet_pods(cluster: Cluster, fleet) -> list:
    """The fleet's pods that are not being deleted: (name, ready) pairs."""
    from kubernetes import client

    from backends.k8s_objects import selector

    pods = client.CoreV1Api(cluster.plane.admin).list_namespaced_pod(
        cluster.namespace, label_selector=selector({LABEL_FLEET: fleet.prefix})).items
    return [(p.metadata.name, any(c.type == "Ready" and c.status == "True"
                                  for c in p.status.conditions or []))
            for p in pods if p.metadata.deletion_timestamp is None]


def _k8s_fleet(make_fleet, cluster: Cluster, **settings):
    return make_fleet(CONTAINER_DEPLOYMENT="k8s", KUBECONFIG_PATH=str(cluster.kubeconfig),
                      K8S_NAMESPACE=cluster.namespace, **settings)


@pytest.mark.parametrize("access", ["nodeport", "podip"])
def test_sdk_session_and_pool_refill_on_a_k8s_fleet(make_fleet, k8s_cluster_env, access):
    """The README's SDK example, unchanged, against a fleet whose sandboxes are pods, reached at
    the node's port or at the pod's own address (the URL the backend gave, kept in the record)."""
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    cluster = k8s_cluster_env
    fleet = _k8s_fleet(make_fleet, cluster, POOL_SIZE=1, K8S_ACCESS_MODE=access)
    warm = fleet.wait_for(lambda: [n for n, ready in _fleet_pods(cluster, fleet) if ready],
                          timeout=60, what="the warm pod")
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        result = sb.run_shell_command(command="echo hi")
        assert _texts(result, "stdout") == ["hi\n"], result
        sb.run_ipython_cell(code="x = 6 * 7")
        assert _texts(sb.run_ipython_cell(code="print(x)"), "stdout") == ["42\n"]
        sb.fs.write("notes/k.txt", "in a pod")
        assert sb.fs.read("notes/k.txt") == "in a pod"
        assert sb.list_tools()
        name = sb.sandbox_id
        info = fleet.data("get_info", {"identity": name})
        assert info["container_id"] == warm[0]  # the session got the warm pod...
        assert info["url"].startswith("http://127.0.") and (access == "nodeport") == (
            not info["url"].endswith(":80"))
        # ... and the pool is refilled with exactly one more
        fleet.wait_for(lambda: len([r for _, r in _fleet_pods(cluster, fleet) if r]) == 2,
                       timeout=60, what="the pool refilled")
    fleet.wait_for(lambda: warm[0] not in [n for n, _ in _fleet_pods(cluster, fleet)],
                   what="the released pod removed")
    assert fleet.data("get_info", {"identity": name})["state"] == "released"
    assert len(_fleet_pods(cluster, fleet)) == 1
    assert fleet.stop() == 0  # AUTO_CLEANUP: the warm one goes too
    assert _fleet_pods(cluster, fleet) == []
    assert cluster.objects_of_prefix(fleet.prefix) == {}


def test_idle_session_is_reaped_and_restored_on_k8s(make_fleet, k8s_cluster_env):
    """The reaper recycles an idle session's pod; the next call restores it with its workspace
    (hostpath workspaces: the worker runs on the fake node, as on a one-node cluster)."""
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    cluster = k8s_cluster_env
    fleet = _k8s_fleet(make_fleet, cluster, POOL_SIZE=0, HEARTBEAT_TIMEOUT=2,
                       WATCHER_SCAN_INTERVAL=1, K8S_WORKSPACE="hostpath")
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.run_shell_command(command="echo kept > /workspace/state.txt")
        old = sb.sandbox_id
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": old})["state"] == "recycled",
                       timeout=30, what="recycling")
        fleet.wait_for(lambda: not _fleet_pods(cluster, fleet), what="the pod removed")
        result = sb.run_shell_command(command="cat /workspace/state.txt")
        assert _texts(result, "stdout") == ["kept\n"]
    fleet.wait_for(lambda: not _fleet_pods(cluster, fleet), what="release after restore")


# -- manifests, without a cluster -------------------------------------------------------------

@pytest.mark.parametrize("sandbox_name", [
    "runtime_sandbox_container_" + "0123456789abcdef" * 2, "Runtime_Sandbox_X", "9-starts-with-a-digit",
    "___", "x" * 200, "sftest_ab12cd_shared"])
def test_object_names_are_dns_labels_and_distinct(sandbox_name):
    import re

    from backends.k8s_objects import object_name, service_name

    name = object_name(sandbox_name)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 55
    assert len(service_name(name)) <= 63
    assert object_name(sandbox_name) == name  # stable: reconcile and remove derive it again
    assert object_name(sandbox_name.swapcase()) != name or sandbox_name.swapcase() == sandbox_name


def test_label_values_kubernetes_refuses_become_digests_and_still_match():
    from types import SimpleNamespace

    from backends.k8s_objects import label_value, matches, metadata, selector

    assert label_value("contract-host") == "contract-host"
    hashed = label_value("runtime_sandbox_container_")
    assert hashed.startswith("h") and len(hashed) == 41
    spec = SimpleNamespace(name="runtime_sandbox_container_x", host_port=31000, workspace=None,
                           labels={LABEL_FLEET: "runtime_sandbox_container_", LABEL_NAME: "x",
                                   "io.sandbox-fleet.meta": '{"a": 1}'})
    meta = metadata("x-1", spec)
    assert meta["labels"][LABEL_FLEET] == hashed
    assert "io.sandbox-fleet.meta" not in meta["labels"]  # not selectable: annotation only
    assert f"{LABEL_FLEET}={hashed}" in selector({LABEL_FLEET: "runtime_sandbox_container_"})
    as_object = SimpleNamespace(annotations=meta["annotations"])
    assert matches(as_object, {"io.sandbox-fleet.meta": '{"a": 1}', LABEL_NAME: "x"})
    assert not matches(as_object, {LABEL_NAME: "y"})


@pytest.mark.parametrize(("egress", "allow"), [("none", ()), ("lan", ()), ("open", ("10.1.0.0/16",))])
def test_network_policy_egress_follows_the_type(egress, allow):
    from backends.base import ContainerSpec
    from backends.k8s_objects import NON_PUBLIC, network_policy

    spec = ContainerSpec(name="s", image="i", host_port=31000, environment={}, labels={},
                         egress=egress, egress_allow=allow)
    policy = network_policy("s-1", spec, worker_labels={"app": "w"}, worker_cidrs=("192.0.2.0/24",))
    rules = policy["spec"]
    assert rules["policyTypes"] == ["Ingress", "Egress"]
    assert rules["ingress"][0]["from"] == [{"ipBlock": {"cidr": "192.0.2.0/24"}},
                                           {"podSelector": {"matchLabels": {"app": "w"}}}]
    if egress == "none":
        assert rules["egress"] == []
    elif egress == "lan":
        assert rules["egress"] == [{}]
    else:
        public = rules["egress"][0]["to"]
        assert public[0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC)}
        assert public[1] == {"ipBlock": {"cidr": "10.1.0.0/16"}}
        assert rules["egress"][1]["ports"][0]["port"] == 53


def test_emptydir_workspaces_are_kept_in_storage_across_a_recycle_and_a_release(
        make_fleet, k8s_cluster_env, tmp_path):
    """With STORAGE_FOLDER, an emptyDir workspace (not a folder of the worker's host) is copied
    out through the agent before its pod goes, and into the pod that restores it."""
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    cluster = k8s_cluster_env
    storage = tmp_path / "storage"
    storage.mkdir()
    fleet = _k8s_fleet(make_fleet, cluster, POOL_SIZE=0, HEARTBEAT_TIMEOUT=2,
                       WATCHER_SCAN_INTERVAL=1, STORAGE_FOLDER=str(storage))
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.run_shell_command(command="mkdir -p /workspace/d; echo kept > /workspace/d/state.txt")
        old = sb.sandbox_id
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": old})["state"] == "recycled",
                       timeout=30, what="recycling")
        fleet.wait_for(lambda: not _fleet_pods(cluster, fleet), what="the pod removed")
        [kept] = list(storage.iterdir())
        assert (kept / "d" / "state.txt").read_text() == "kept\n"
        result = sb.run_shell_command(command="cat /workspace/d/state.txt; echo more > /workspace/m.txt")
        assert _texts(result, "stdout") == ["kept\n"]
    fleet.wait_for(lambda: not _fleet_pods(cluster, fleet), what="release after restore")
    fleet.wait_for(lambda: (kept / "m.txt").exists(), what="the release's copy")
    assert (kept / "m.txt").read_text() == "more\n"


def test_two_worker_sets_serve_one_namespace_and_one_dying_loses_nothing(
        make_fleet, k8s_cluster_env, redis_url, raw_redis, slow_image, tmp_path):
    """The Kubernetes backend keeps nothing on the worker's machine, so two sets of workers may
    serve one namespace under one FLEET_HOST_NAME (the same queues, ports and pods). The fleet's
    own lifecycle worker is killed with creates in flight: every caller still gets a pod that
    answers (the creates are taken over), and nothing is left after the releases."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.fleet.test_crash import kill9

    cluster = k8s_cluster_env
    raw_redis.flushdb()
    ext = tmp_path / "slow_ext.py"
    ext.write_text("from sandbox_core.registry import SandboxRegistry\n"
                   f"SandboxRegistry.register({slow_image!r}, sandbox_type='slowstart')\n")
    fleet = _k8s_fleet(make_fleet, cluster, extensions=[str(ext)], POOL_SIZE=0,
                       FLEET_RECONCILE_INTERVAL=2, REDIS_ENABLED="true", REDIS_URL=redis_url)
    host = fleet.values["FLEET_HOST_NAME"]
    start, end = (int(p) for p in fleet.values["PORT_RANGE"].strip("[]").split(","))
    other = fleet.add_host(host, (start, end))  # the same host name: the same queues
    try:
        with ThreadPoolExecutor(3) as pool:
            creates = [pool.submit(fleet.post, "create", {"sandbox_type": "slowstart"})
                       for _ in range(3)]
            fleet.wait_for(lambda: len(_fleet_pods(cluster, fleet)) >= 2, timeout=60,
                           what="creates in flight")
            kill9(fleet, "lifecycle@")  # one set's lifecycle worker; the other set lives on
            names = [c.result(timeout=150).json()["data"] for c in creates]
        assert all(names) and len(set(names)) == 3, names
        for name in names:
            result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                              "arguments": {"command": "echo ok"}})
            assert _texts(result, "stdout") == ["ok\n"]
            assert fleet.data("release", {"identity": name}) is True
        fleet.wait_for(lambda: cluster.objects_of_prefix(fleet.prefix) == {}, timeout=60,
                       what="no pod, Service or policy left")
    finally:
        other.stop(drain=False)
