"""TEST-ONLY: a fake Kubernetes node that runs pods with the local Docker engine.

``FakeNodeSimulator`` stands in for what a real cluster's scheduler, kubelet and kube-proxy do,
just enough for the fleet's Kubernetes backend to be tested against a real kube-apiserver:

- it registers a Node (InternalIP 127.0.0.1) and binds every pending pod of its namespace to it
  (the scheduler's ``pods/binding`` call);
- it runs a bound pod's container with Docker: its env, its limits (memory, CPU), its security
  context (capabilities, no-new-privileges), its volumes (emptyDir as a folder of its own,
  hostPath as a bind mount, read-only where the mount says so);
- nodeport access: the port 80 of the pod is published on 127.0.0.1:<nodePort> of the NodePort
  Service that selects it (kube-proxy's job); podip access: the pod gets a loopback address of
  its own (127.0.<n>.<m>) as its pod IP, with port 80 published there;
- it reports the pod's status through the API (phase, hostIP, podIP, container states, the
  Ready condition once the pod's readinessProbe passes, ``ErrImagePull`` for an image Docker
  does not have) and finalises graceful deletions (stops the container, then deletes the pod
  with grace 0, as a kubelet does).

Not simulated: scheduling decisions, image pulls, CNI (NetworkPolicies are stored and validated by
the API server but enforced by nothing here), restarts, liveness probes, node failures. Never use
it outside the tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import requests
import urllib3
from docker.errors import DockerException, ImageNotFound
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

LABEL_SIMULATED = "io.sandbox-fleet.test.fake-node"
LABEL_POD_UID = "io.sandbox-fleet.test.pod-uid"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeNodeSimulator:
    """TEST-ONLY scheduler + kubelet + kube-proxy for one namespace (see the module's text)."""

    def __init__(self, api: client.ApiClient, namespace: str, folder: Path,
                 node_name: str = "fake-node-1") -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.node = node_name
        self.folder = folder
        self.docker = docker.from_env(timeout=60)
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="fake-node")
        self.lock = threading.Lock()
        self.started: dict[str, str] = {}  # pod uid -> docker container id
        self.busy: set[str] = set()  # pod uids being worked on
        self.again: dict[str, tuple[str, Any]] = {}  # the latest event of a busy pod
        self.pod_ips: dict[str, str] = {}
        self.next_ip = 1
        self.threads: list[threading.Thread] = []

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> FakeNodeSimulator:
        self.core.create_node({"metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "sandbox-fleet.io/fake-node": "true"}}},
            _request_timeout=10)
        self.core.patch_node_status(self.node, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node}],
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "FakeNodeReady",
                            "message": "TEST-ONLY node simulator", "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now()}]}}, _request_timeout=10)
        for target in (self._watch_pods, self._watch_services):
            thread = threading.Thread(target=target, daemon=True, name=f"fake-node-{target.__name__}")
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for container in self.docker.containers.list(
                all=True, filters={"label": f"{LABEL_SIMULATED}={self.node}"}):
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            self.core.delete_node(self.node, _request_timeout=10)
        self.docker.close()

    def container_of(self, pod_name: str) -> Any:
        """The Docker container running a pod (for the tests' own checks), or None."""
        pod = self.core.read_namespaced_pod(pod_name, self.namespace, _request_timeout=10)
        with self.lock:
            container_id = self.started.get(pod.metadata.uid)
        return self.docker.containers.get(container_id) if container_id else None

    # -- watching ------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        self._watch(self.core.list_namespaced_pod, self._on_pod)

    def _watch_services(self) -> None:
        """A NodePort Service made after its pod: the pod can start now (kube-proxy's part)."""
        def on_service(kind: str, service: Any) -> None:
            if kind in ("ADDED", "MODIFIED") and service.spec.type == "NodePort":
                selector = service.spec.selector or {}
                for pod in self.core.list_namespaced_pod(self.namespace, _request_timeout=10).items:
                    if (pod.metadata.labels or {}).items() >= selector.items():
                        self._on_pod("MODIFIED", pod)
        self._watch(self.core.list_namespaced_service, on_service)

    def _watch(self, lister, handle) -> None:
        while not self.stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(lister, self.namespace, timeout_seconds=2,
                                           _request_timeout=(5, 10)):
                    if self.stopping.is_set():
                        break
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        handle(event["type"], event["object"])
            except Exception as e:  # keep simulating: a broken watch is watched again
                if not self.stopping.is_set():
                    log.info("fake node: watch broke: %s", e)
                    self.stopping.wait(0.2)
            finally:
                stream.stop()

    def _on_pod(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        with self.lock:
            if uid in self.busy:
                self.again[uid] = (kind, pod)  # handled when the current one is done
                return
            self.busy.add(uid)
        self.pool.submit(self._handle, kind, pod)

    def _handle(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        while True:
            self._handle_one(kind, pod)
            with self.lock:
                if uid not in self.again:
                    self.busy.discard(uid)
                    return
                kind, pod = self.again.pop(uid)

    def _handle_one(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        try:
            if kind == "DELETED":
                self._remove_container(uid)
            elif pod.spec.node_name is None and pod.metadata.deletion_timestamp is None:
                self._bind(pod)
            elif pod.spec.node_name != self.node:
                return
            elif pod.metadata.deletion_timestamp is not None:
                self._finalise(pod)
            elif uid not in self.started and not _has_image_error(pod):
                self._run(pod)
        except Exception:  # a failure here is the simulator's, not the backend's: say so loudly
            log.exception("fake node: handling pod %s failed", pod.metadata.name)

    # -- scheduler, kubelet, kube-proxy --------------------------------------------------------

    def _bind(self, pod: Any) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.metadata.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
        try:  # the client cannot read a Binding back: take the raw answer
            self.core.create_namespaced_pod_binding(pod.metadata.name, self.namespace, body,
                                                    _preload_content=False, _request_timeout=10)
        except ApiException as e:
            if e.status not in (404, 409):  # gone, or bound meanwhile
                raise

    def _node_port(self, pod: Any) -> int | None:
        labels = pod.metadata.labels or {}
        for service in self.core.list_namespaced_service(self.namespace, _request_timeout=10).items:
            selector = service.spec.selector or {}
            if service.spec.type == "NodePort" and selector and labels.items() >= selector.items():
                return service.spec.ports[0].node_port
        return None

    def _run(self, pod: Any) -> None:
        spec = pod.spec.containers[0]
        node_port = self._node_port(pod)
        annotations = pod.metadata.annotations or {}
        if node_port is None and annotations.get("sandbox-fleet.io/access-mode") == "nodeport":
            return  # the fleet makes its Service next: the pod starts when it does
        pod_ip = self._pod_ip(pod.metadata.uid)
        published = [(pod_ip, 80)] + ([("127.0.0.1", node_port)] if node_port else [])
        try:
            self.docker.images.get(spec.image)
        except ImageNotFound:
            self._status(pod, phase="Pending", waiting=("ErrImagePull",
                         f'rpc error: code = NotFound desc = failed to pull and unpack image '
                         f'"{spec.image}": not found (the fake node has only the local Docker '
                         "engine's images)"))
            return
        volumes, tmp = self._volumes(pod)
        security = spec.security_context
        limits = (spec.resources.limits if spec.resources else None) or {}
        caps = security.capabilities if security else None
        options: dict[str, Any] = {
            "cap_drop": list(caps.drop or []) if caps else [],
            "cap_add": list(caps.add or []) if caps else [],
            "security_opt": ["no-new-privileges"]
            if security and security.allow_privilege_escalation is False else [],
        }
        if "memory" in limits:
            options["mem_limit"] = int(_quantity(limits["memory"]))
            options["memswap_limit"] = options["mem_limit"]
        if "cpu" in limits:
            options["nano_cpus"] = int(_quantity(limits["cpu"]) * 1e9)
        container = self.docker.containers.create(
            spec.image, name=f"k8s-sim_{pod.metadata.name}_{pod.metadata.uid[:8]}",
            environment={e.name: e.value or "" for e in spec.env or []},
            ports={"80/tcp": published}, volumes=volumes,
            labels={LABEL_SIMULATED: self.node, LABEL_POD_UID: pod.metadata.uid,
                    "io.sandbox-fleet.test.emptydir": tmp}, **options)
        with self.lock:
            self.started[pod.metadata.uid] = container.id
        container.start()
        self._status(pod, phase="Running", running=True, pod_ip=pod_ip)
        self.pool.submit(self._probe, pod, pod_ip)

    def _pod_ip(self, uid: str) -> str:
        with self.lock:
            if uid not in self.pod_ips:
                self.pod_ips[uid] = f"127.0.{100 + self.next_ip // 250}.{1 + self.next_ip % 250}"
                self.next_ip += 1
            return self.pod_ips[uid]

    def _volumes(self, pod: Any) -> tuple[dict, str]:
        mounts = {m.name: m for m in pod.spec.containers[0].volume_mounts or []}
        volumes: dict[str, dict] = {}
        tmp = self.folder / "emptydir" / pod.metadata.uid
        for volume in pod.spec.volumes or []:
            mount = mounts.get(volume.name)
            if mount is None:
                continue
            mode = "ro" if mount.read_only else "rw"
            if volume.host_path is not None:
                if volume.host_path.type == "DirectoryOrCreate":
                    os.makedirs(volume.host_path.path, exist_ok=True)
                volumes[volume.host_path.path] = {"bind": mount.mount_path, "mode": mode}
            elif volume.empty_dir is not None:
                path = tmp / volume.name
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)  # the sandbox's root has no DAC_OVERRIDE
                volumes[str(path)] = {"bind": mount.mount_path, "mode": mode}
        return volumes, str(tmp)

    def _probe(self, pod: Any, pod_ip: str) -> None:
        """The readinessProbe, until it passes once (then the Ready condition is reported)."""
        probe = pod.spec.containers[0].readiness_probe
        period = (probe.period_seconds if probe else 1) or 1
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            with self.lock:
                if pod.metadata.uid not in self.started:
                    return  # deleted meanwhile
            if _probe_once(probe, pod_ip, 80):
                with contextlib.suppress(ApiException):
                    self._status(pod, phase="Running", running=True, ready=True, pod_ip=pod_ip)
                return
            self.stopping.wait(min(period, 0.2))  # a probe period, shortened: tests wait on it

    def _finalise(self, pod: Any) -> None:
        """A graceful deletion: stop the container, then remove the pod for good."""
        grace = pod.metadata.deletion_grace_period_seconds or 0
        self._remove_container(pod.metadata.uid, grace)
        try:
            options = client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=pod.metadata.uid))
            self.core.delete_namespaced_pod(
                pod.metadata.name, self.namespace, grace_period_seconds=0, body=options,
                _request_timeout=10, _preload_content=False).release_conn()
        except ApiException as e:
            if e.status not in (404, 409):  # gone already, or another pod of that name now
                raise

    def _remove_container(self, uid: str, grace: int = 0) -> None:
        with self.lock:
            container_id = self.started.pop(uid, None)
        if container_id:
            with contextlib.suppress(DockerException):
                container = self.docker.containers.get(container_id)
                container.stop(timeout=min(grace, 2))
                container.remove(force=True, v=True)
        shutil.rmtree(self.folder / "emptydir" / uid, ignore_errors=True)

    def _status(self, pod: Any, *, phase: str, running: bool = False, ready: bool = False,
                waiting: tuple[str, str] | None = None, pod_ip: str | None = None) -> None:
        spec = pod.spec.containers[0]
        state: dict[str, Any] = {"running": {"startedAt": _now()}} if running else \
            {"waiting": {"reason": waiting[0], "message": waiting[1]}} if waiting else {}
        flag = "True" if ready else "False"
        status: dict[str, Any] = {
            "phase": phase, "hostIP": "127.0.0.1", "startTime": _now(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": _now()},
                {"type": "Ready", "status": flag, "lastTransitionTime": _now()}],
            "containerStatuses": [{"name": spec.name, "image": spec.image, "imageID": "",
                                   "ready": ready, "restartCount": 0, "started": running,
                                   "state": state}]}
        if pod_ip:
            status["podIP"] = pod_ip
            status["podIPs"] = [{"ip": pod_ip}]
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace,
                                              {"status": status}, _request_timeout=10)


def _has_image_error(pod: Any) -> bool:
    return any(s.state and s.state.waiting and s.state.waiting.reason == "ErrImagePull"
               for s in (pod.status.container_statuses or []))


def _probe_once(probe: Any, host: str, port: int) -> bool:
    if probe is None or probe.http_get is None:
        import socket

        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
            return True
        return False
    headers = {h.name: h.value for h in probe.http_get.http_headers or []}
    try:
        answer = requests.get(f"http://{host}:{port}{probe.http_get.path}", headers=headers,
                              timeout=(probe.timeout_seconds or 1))
    except requests.RequestException:
        return False
    return 200 <= answer.status_code < 400


def _quantity(text: str) -> float:
    from backends.k8s_objects import parse_quantity

    return parse_quantity(text) or 0
