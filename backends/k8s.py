"""Kubernetes: each sandbox a Pod (plus a NodePort Service and a NetworkPolicy) in K8S_NAMESPACE.

A fleet "host" here is a namespace seen through one worker's name (FLEET_HOST_NAME): the worker
keeps no state of its own, so any number of workers, each with its own host name, may serve one
namespace; each lists and reconciles only the pods labelled with its name. The objects and their
manifests are in ``k8s_objects``; docs/backends.md ("Kubernetes") has the set-up and the Role.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from sandbox_core.errors import BackendError, BadRequest, PortTaken, SandboxError, SettingsError, Unavailable

from . import k8s_objects as objects
from .base import Backend, Container, ContainerSpec

log = logging.getLogger(__name__)

#: One API call may take this long (connect, read) in seconds; watches set their own.
CALL_TIMEOUT = (5, 30)
#: How long ``remove`` waits for the node to confirm a pod's end before deleting it by force.
DELETE_WAIT = 30
#: A container waiting for one of these reasons will not start without a different image.
IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
#: ... and for one of these, not without a different spec or image.
START_ERRORS = ("CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
                "RunContainerError")
#: What the agent needs in any image: its port 80 (runc lets root bind it with no capability
#: through a sysctl that not every runtime sets; gVisor's kernel does not have it).
AGENT_CAPABILITIES = ["NET_BIND_SERVICE"]


class K8sBackend(Backend):
    name = "k8s"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.namespace = settings.K8S_NAMESPACE
        if not objects.valid_dns_label(self.namespace):
            raise SettingsError(f"K8S_NAMESPACE={self.namespace!r} is not a valid namespace name "
                                "(lower-case letters, digits and '-', at most 63)")
        self.worker_labels = _parse_labels(settings.K8S_WORKER_LABELS)
        self.worker_cidrs = _parse_cidrs(settings.K8S_WORKER_CIDRS)
        if settings.READONLY_MOUNTS and settings.K8S_WORKSPACE != "hostpath":
            raise SettingsError(
                "READONLY_MOUNTS cannot be honoured with K8S_WORKSPACE=emptydir: they are host "
                "folders, which only a pod on the worker's own node can mount. Set "
                "K8S_WORKSPACE=hostpath (one-node clusters, workers on the node) or remove them")
        self.api = _api_client(settings.KUBECONFIG_PATH)
        self.core = client.CoreV1Api(self.api)
        self.net = client.NetworkingV1Api(self.api)
        try:  # the credentials and the namespace, checked once at start
            self.core.list_namespaced_pod(self.namespace, limit=1, _request_timeout=CALL_TIMEOUT,
                                          label_selector=objects.selector({}))
        except (ApiException, urllib3.exceptions.HTTPError) as e:
            raise SettingsError(f"CONTAINER_DEPLOYMENT=k8s: {self._error(e, 'list pods').detail}") from e

    # -- the Backend interface -----------------------------------------------------------------

    @property
    def workspace_on_host(self) -> bool:
        return self.settings.K8S_WORKSPACE == "hostpath"

    def create(self, spec: ContainerSpec) -> Container:
        name = objects.object_name(spec.name)
        if spec.readonly_mounts and self.settings.K8S_WORKSPACE != "hostpath":
            raise BadRequest(f"sandbox {spec.name}: read-only mounts need K8S_WORKSPACE=hostpath")
        token = spec.labels.get("io.sandbox-fleet.secret") or spec.environment.get("SECRET_TOKEN")
        capabilities = list(dict.fromkeys(
            [*AGENT_CAPABILITIES, *spec.runtime_config.get("cap_add", [])]))
        pod = objects.pod(name, spec, workspace=self.settings.K8S_WORKSPACE, token=token,
                          capabilities=capabilities)
        pod["metadata"]["annotations"][objects.ANNOTATION_ACCESS] = self.settings.K8S_ACCESS_MODE
        policy = objects.network_policy(name, spec, worker_labels=self.worker_labels,
                                        worker_cidrs=self.worker_cidrs)
        policy["metadata"]["annotations"][objects.ANNOTATION_POD] = json.dumps(pod)
        deadline = time.monotonic() + self.settings.FLEET_CREATE_TIMEOUT
        try:
            # The policy first: the pod is never up without it.
            self._call("create the network policy of " + spec.name,
                       self.net.create_namespaced_network_policy, self.namespace, policy)
            url = self._run_pod(spec.name, name, pod, deadline)
        except BaseException:  # a failure, a timeout or the job's own limit: leave nothing
            try:
                self._delete_all(name, spec.name)
            except SandboxError as e:  # reconcile removes it later; the create's error is the news
                log.error("sandbox %s: could not remove what the failed create made: %s",
                          spec.name, e.detail)
            raise
        log.info("sandbox %s: pod %s ready, agent at %s", spec.name, name, url)
        return Container(id=name, name=spec.name, status="running", labels=spec.labels,
                         image=spec.image, environment=dict(spec.environment),
                         host_port=spec.host_port, workspace=spec.workspace, url=url)

    def remove(self, container_id: str) -> None:
        for name in self._candidates(container_id):
            self._delete_all(name, container_id)

    def inspect(self, container_id: str) -> Container | None:
        for name in self._candidates(container_id):
            pod = self._get(self.core.read_namespaced_pod, name)
            if pod is not None:
                found = _container(name, pod.metadata, _pod_status(pod), _of_pod(pod))
                found.url = _agent_url(pod)
                return found
            policy = self._get(self.net.read_namespaced_network_policy, name)
            if policy is not None:  # stopped: only its objects remain
                return self._stopped(name, policy)
        return None

    def list(self, labels: dict[str, str]) -> list[Container]:
        selector = objects.selector(labels)
        pods = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                          label_selector=selector).items
        policies = self._call("list network policies", self.net.list_namespaced_network_policy,
                              self.namespace, label_selector=selector).items
        found = {p.metadata.name: _container(p.metadata.name, p.metadata, _pod_status(p),
                                             None, full=False)
                 for p in pods if objects.matches(p.metadata, labels)}
        for policy in policies:  # a stopped sandbox, or what a killed create left
            if policy.metadata.name not in found and objects.matches(policy.metadata, labels):
                found[policy.metadata.name] = self._stopped(policy.metadata.name, policy, full=False)
        return list(found.values())

    def stop(self, container_id: str, timeout: int = 1) -> None:
        """Kubernetes cannot stop a pod: its Service and policy stay (freed from their owner,
        which is deleted), and ``start`` makes the pod again from the manifest the policy keeps."""
        name, pod, policy = self._find(container_id)
        if policy is not None:
            self._disown(name)
        if pod is not None:
            self._delete_pod(name, pod.metadata.annotations.get(objects.ANNOTATION_NAME, name),
                             grace=timeout)

    def start(self, container_id: str) -> None:
        name, pod, policy = self._find(container_id)
        if pod is not None and pod.metadata.deletion_timestamp is None:
            return
        if policy is None:
            raise BackendError(f"sandbox {container_id}: its pod manifest is gone; cannot start it")
        manifest = json.loads(policy.metadata.annotations[objects.ANNOTATION_POD])
        sandbox = manifest["metadata"]["annotations"][objects.ANNOTATION_NAME]
        if pod is not None:
            self._wait_deleted(name, sandbox)
        self._run_pod(sandbox, name, manifest, time.monotonic() + self.settings.FLEET_CREATE_TIMEOUT,
                      make_service=False)

    def close(self) -> None:
        self.api.close()

    # -- creating ------------------------------------------------------------------------------

    def _run_pod(self, sandbox: str, name: str, manifest: dict, deadline: float,
                 make_service: bool = True) -> str:
        """Create the pod (and its Service), own the rest by it, and wait until it is Ready.
        Returns the URL its agent answers on."""
        created = self._call(f"create the pod of {sandbox}", self.core.create_namespaced_pod,
                             self.namespace, manifest)
        uid = created.metadata.uid
        if self.settings.K8S_ACCESS_MODE == "nodeport":
            spec = _spec_of(manifest)
            if make_service:
                self._create_service(sandbox, name, spec, uid)
            else:
                self._own(self.core.patch_namespaced_service, objects.service_name(name), name, uid)
        self._own(self.net.patch_namespaced_network_policy, name, name, uid)
        return _agent_url(self._wait_ready(sandbox, name, deadline))

    def _create_service(self, sandbox: str, name: str, spec: ContainerSpec, uid: str) -> None:
        try:
            self.core.create_namespaced_service(self.namespace, objects.service(name, spec, uid),
                                                _request_timeout=CALL_TIMEOUT)
        except ApiException as e:
            message = _message(e)
            if e.status == 422 and "already allocated" in message:
                raise PortTaken(f"nodePort {spec.host_port} is taken in the cluster") from e
            if e.status == 422 and "not in the valid range" in message:
                raise BackendError(
                    f"sandbox {sandbox}: nodePort {spec.host_port} is outside the cluster's "
                    f"node-port range ({message}); set PORT_RANGE inside it, e.g. [30000, 32768]"
                ) from e
            raise self._error(e, f"create the service of {sandbox}") from e
        except urllib3.exceptions.HTTPError as e:
            raise self._error(e, f"create the service of {sandbox}") from e

    def _own(self, patch: Callable, object_name: str, pod_name: str, uid: str) -> None:
        body = {"metadata": {"ownerReferences": objects.owned_by(pod_name, uid)}}
        self._call(f"set the owner of {object_name}", patch, object_name, self.namespace, body)

    def _disown(self, name: str) -> None:
        body = {"metadata": {"ownerReferences": None}}
        self._call(f"release {name}'s policy from its pod", self.net.patch_namespaced_network_policy,
                   name, self.namespace, body)
        if self.settings.K8S_ACCESS_MODE == "nodeport":
            with contextlib.suppress(BackendError):  # a stop after a failed service create
                self._call(f"release {name}'s service from its pod",
                           self.core.patch_namespaced_service, objects.service_name(name),
                           self.namespace, body)

    def _wait_ready(self, sandbox: str, name: str, deadline: float) -> Any:
        """Watch the pod until its Ready condition is true; a pod that cannot start (its image
        cannot be pulled, its container keeps failing) ends the wait with the reason."""
        last = "not scheduled yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"sandbox {sandbox}: pod {name} was not ready within "
                                  f"{self.settings.FLEET_CREATE_TIMEOUT}s ({last})")
            stream = watch.Watch()
            try:
                # No resourceVersion: the first event is the pod as it is now, then its changes.
                for event in stream.stream(
                        self.core.list_namespaced_pod, self.namespace,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=max(1, int(remaining)),
                        _request_timeout=(5, remaining + 5)):
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        raise BackendError(f"sandbox {sandbox}: pod {name} was deleted while it "
                                           "started")
                    if event["type"] == "ERROR" or not hasattr(pod, "status"):
                        break  # e.g. an expired watch: watch again
                    ready, last = _readiness(sandbox, pod)
                    if ready:
                        return pod
            except ApiException as e:
                raise self._error(e, f"watch the pod of {sandbox}") from e
            except urllib3.exceptions.HTTPError as e:
                if time.monotonic() >= deadline:
                    continue
                log.info("sandbox %s: the pod watch broke (%s); watching again", sandbox, e)
            finally:
                stream.stop()

    # -- removing ------------------------------------------------------------------------------

    def _delete_all(self, name: str, sandbox: str) -> None:
        """Service, pod (until the node confirmed its end), then the policy: gone already is
        fine. Each is deleted by the fleet itself, not left to the garbage collector, which a
        cluster may run late or not at all."""
        # (in either access mode: one switched since must not leave services behind)
        self._delete(self.core.delete_namespaced_service, objects.service_name(name),
                     f"delete the service of {sandbox}")
        self._delete_pod(name, sandbox)
        self._delete(self.net.delete_namespaced_network_policy, name,
                     f"delete the network policy of {sandbox}")

    def _delete_pod(self, name: str, sandbox: str, grace: int | None = None) -> None:
        if not self._delete(self.core.delete_namespaced_pod, name, f"delete the pod of {sandbox}",
                            grace_period_seconds=grace):
            return
        try:
            self._wait_deleted(name, sandbox)
        except Unavailable as e:  # the node is gone or stuck: take the pod out of the API
            log.warning("sandbox %s: %s; deleting the pod by force", sandbox, e.detail)
            self._delete(self.core.delete_namespaced_pod, name, f"delete the pod of {sandbox}",
                         grace_period_seconds=0)

    def _wait_deleted(self, name: str, sandbox: str) -> None:
        deadline = time.monotonic() + DELETE_WAIT
        while time.monotonic() < deadline:
            stream = watch.Watch()
            try:
                current = self._get(self.core.read_namespaced_pod, name)
                if current is None:
                    return
                for event in stream.stream(
                        self.core.list_namespaced_pod, self.namespace,
                        field_selector=f"metadata.name={name}",
                        resource_version=current.metadata.resource_version,
                        timeout_seconds=max(1, int(deadline - time.monotonic())),
                        _request_timeout=(5, DELETE_WAIT + 5)):
                    if event["type"] == "DELETED":
                        return
            except (ApiException, urllib3.exceptions.HTTPError) as e:
                log.info("sandbox %s: watching the pod's deletion: %s", sandbox, e)
            finally:
                stream.stop()
        raise Unavailable(f"pod {name} was not gone {DELETE_WAIT}s after its deletion")

    def _delete(self, method: Callable, name: str, what: str, **kwargs) -> bool:
        """Delete one object; False if it was not there."""
        try:
            # Not read back: what a delete returns differs between server versions (a Status or
            # the object), and the client's models accept only one.
            method(name, self.namespace, _request_timeout=CALL_TIMEOUT, _preload_content=False,
                   **kwargs).release_conn()
        except ApiException as e:
            if e.status == 404:
                return False
            raise self._error(e, what) from e
        except urllib3.exceptions.HTTPError as e:
            raise self._error(e, what) from e
        return True

    # -- reading -------------------------------------------------------------------------------

    def _candidates(self, container_id: str) -> list[str]:
        """Object names a container id may stand for: the one derived from a sandbox name, and
        the id itself where it already is one (create returns object names as ids)."""
        names = [objects.object_name(container_id)]
        if objects.is_object_name(container_id):
            names.insert(0, container_id)
        return names

    def _find(self, container_id: str) -> tuple[str, Any, Any]:
        for name in self._candidates(container_id):
            pod = self._get(self.core.read_namespaced_pod, name)
            policy = self._get(self.net.read_namespaced_network_policy, name)
            if pod is not None or policy is not None:
                return name, pod, policy
        raise BackendError(f"sandbox {container_id} does not exist")

    def _get(self, method: Callable, name: str) -> Any:
        try:
            return method(name, self.namespace, _request_timeout=CALL_TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._error(e, f"read {name}") from e
        except urllib3.exceptions.HTTPError as e:
            raise self._error(e, f"read {name}") from e

    def _stopped(self, name: str, policy: Any, full: bool = True) -> Container:
        try:
            manifest = json.loads(policy.metadata.annotations.get(objects.ANNOTATION_POD) or "{}")
            container = manifest["spec"]["containers"][0]
            image = container["image"], {e["name"]: e.get("value", "") for e in container["env"]}
        except (ValueError, KeyError, IndexError, TypeError):
            image = None
        return _container(name, policy.metadata, "exited", image, full=full)

    def _call(self, what: str, method: Callable, *args, **kwargs) -> Any:
        try:
            return method(*args, _request_timeout=CALL_TIMEOUT, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError) as e:
            raise self._error(e, what) from e

    def _error(self, error: Exception, what: str) -> SandboxError:
        """A Kubernetes failure as the fleet's error, saying what was refused and why."""
        where = f"in namespace {self.namespace} on {self.api.configuration.host}"
        if isinstance(error, urllib3.exceptions.HTTPError):
            return Unavailable(f"cannot reach the Kubernetes API server {self.api.configuration.host} "
                               f"to {what}: {error}")
        assert isinstance(error, ApiException)
        message = _message(error)
        if error.status == 401:
            return BackendError(f"the Kubernetes API server rejected the fleet's credentials "
                                f"(KUBECONFIG_PATH or the pod's service account) to {what}: {message}")
        if error.status == 403:
            return BackendError(f"Kubernetes RBAC does not let the fleet {what} {where}: {message}. "
                                "Bind the fleet's account to the Role in docs/backends.md")
        return BackendError(f"Kubernetes could not {what} {where}: HTTP {error.status}: {message}")


def _api_client(kubeconfig: str | None) -> client.ApiClient:
    """KUBECONFIG_PATH, else the pod's in-cluster service account, else the default kubeconfig
    (``$KUBECONFIG`` or ~/.kube/config), as upstream."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                config.load_kube_config(client_configuration=configuration)
    except (ConfigException, OSError, TypeError, ValueError) as e:
        source = f"KUBECONFIG_PATH={kubeconfig}" if kubeconfig else \
            "no KUBECONFIG_PATH, not in a cluster, and the default kubeconfig"
        raise SettingsError(f"CONTAINER_DEPLOYMENT=k8s: cannot load a cluster configuration "
                            f"({source}): {e}") from e
    configuration.connection_pool_maxsize = 32  # one per worker thread and then some
    return client.ApiClient(configuration)


def _parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or objects.label_value(value.strip()) != value.strip():
            raise SettingsError(f"K8S_WORKER_LABELS: {part!r} is not a key=value label")
        labels[key.strip()] = value.strip()
    return labels


def _parse_cidrs(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_network(c, strict=False)) for c in cidrs)
    except ValueError as e:
        raise SettingsError(f"K8S_WORKER_CIDRS: {e}") from e


def _message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason or error.body or error.status)


def _spec_of(manifest: dict) -> ContainerSpec:
    """What the Service needs of the sandbox's spec, read back from its pod manifest."""
    annotations = manifest["metadata"]["annotations"]
    return ContainerSpec(name=annotations[objects.ANNOTATION_NAME], image="", environment={},
                         host_port=int(annotations[objects.ANNOTATION_PORT]),
                         labels=json.loads(annotations[objects.ANNOTATION_LABELS]),
                         workspace=annotations.get(objects.ANNOTATION_WORKSPACE) or None)


def _readiness(sandbox: str, pod: Any) -> tuple[bool, str]:
    """(ready, what it waits for); raises when the pod cannot become ready."""
    status = pod.status
    image = pod.spec.containers[0].image
    for condition in status.conditions or []:
        if condition.type == "Ready" and condition.status == "True":
            return True, "ready"
    for container in status.container_statuses or []:
        waiting = container.state and container.state.waiting
        if waiting and waiting.reason in IMAGE_ERRORS:
            raise BadRequest(f"image {image} cannot be pulled by the cluster ({waiting.reason}: "
                             f"{waiting.message or 'no message'}); build it with "
                             "`runtime-sandbox-builder` and push it where the nodes pull from")
        if waiting and waiting.reason in START_ERRORS:
            raise BackendError(f"sandbox {sandbox}: its container cannot start "
                               f"({waiting.reason}: {waiting.message or 'no message'})")
    if status.phase in ("Failed", "Succeeded"):
        raise BackendError(f"sandbox {sandbox}: pod {status.phase.lower()} "
                           f"({status.reason or ''} {status.message or ''})".strip())
    if not pod.spec.node_name:
        scheduled = [c for c in status.conditions or [] if c.type == "PodScheduled"]
        return False, scheduled[0].message if scheduled and scheduled[0].message else "not scheduled yet"
    return False, f"on node {pod.spec.node_name}, phase {status.phase}, not ready yet"


def _pod_status(pod: Any) -> str:
    if pod.metadata.deletion_timestamp is not None:
        return "removing"
    return {"Pending": "created", "Running": "running", "Succeeded": "exited",
            "Failed": "exited"}.get(pod.status.phase if pod.status else None, "unknown")


def _of_pod(pod: Any) -> tuple[str, dict[str, str]]:
    container = pod.spec.containers[0]
    return container.image, {e.name: e.value or "" for e in container.env or []}


def _agent_url(pod: Any) -> str | None:
    """Where the agent of a bound pod answers, by the access mode it was made with: its node's
    address and nodePort (a NodePort Service), or its own IP (podip); None until it is bound."""
    annotations = pod.metadata.annotations or {}
    status = pod.status
    if annotations.get(objects.ANNOTATION_ACCESS) == "podip":
        return f"http://{status.pod_ip}:{objects.AGENT_PORT}" if status and status.pod_ip else None
    port = annotations.get(objects.ANNOTATION_PORT)
    return f"http://{status.host_ip}:{port}" if status and status.host_ip and port else None


def _container(name: str, metadata: Any, status: str, image: tuple[str, dict] | None,
               full: bool = True) -> Container:
    """A sandbox as the fleet sees it; ``image`` is (image, environment) of its container."""
    annotations = metadata.annotations or {}
    found = Container(id=name, name=annotations.get(objects.ANNOTATION_NAME, name), status=status,
                      labels=objects.fleet_labels(metadata))
    if full:
        port = annotations.get(objects.ANNOTATION_PORT)
        found.host_port = int(port) if port and port.isdigit() else None
        found.workspace = annotations.get(objects.ANNOTATION_WORKSPACE) or None
        if image is not None:
            found.image, found.environment = image
    return found
