"""The Kubernetes objects of one sandbox, as plain manifests (dicts the API server accepts).

Per sandbox: a NetworkPolicy and a Pod named ``object_name(sandbox name)``, and, in the nodeport
access mode, a NodePort Service ``<that>-service``. The fleet's labels (``backends.base``) carry
values Kubernetes refuses as label values (the default prefix ends with ``_``, meta is JSON), so
they travel whole in one annotation, and the ones reconcile selects by are also labels whose value
is the original when Kubernetes accepts it, else a digest of it (``label_value``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sandbox_core import limits

from .base import (
    LABEL_FLEET,
    LABEL_HOST,
    LABEL_NAME,
    LABEL_POOL,
    LABEL_SANDBOX_TYPE,
    LABEL_SESSION,
    LABEL_TYPE,
    ContainerSpec,
)

MANAGED_BY = ("app.kubernetes.io/managed-by", "sandbox-fleet")
#: The object name of the sandbox: pod, policy and service select each other by it.
LABEL_OBJECT = "sandbox-fleet.io/sandbox"
ANNOTATION_LABELS = "sandbox-fleet.io/labels"  # the fleet's labels, JSON, exact
ANNOTATION_NAME = "sandbox-fleet.io/name"  # the sandbox name the SDK sees
ANNOTATION_PORT = "sandbox-fleet.io/host-port"
ANNOTATION_WORKSPACE = "sandbox-fleet.io/workspace"
ANNOTATION_POD = "sandbox-fleet.io/pod"  # on the policy: the pod manifest, for start after stop
ANNOTATION_ACCESS = "sandbox-fleet.io/access-mode"  # nodeport or podip (K8S_ACCESS_MODE)
#: The fleet's labels that are also Kubernetes labels (what reconcile and pools select by).
SELECTABLE = (LABEL_FLEET, LABEL_HOST, LABEL_NAME, LABEL_TYPE, LABEL_SANDBOX_TYPE, LABEL_POOL,
              LABEL_SESSION)
AGENT_PORT = 80
#: Where an "open" sandbox may not send: private, shared, link-local and loopback ranges.
NON_PUBLIC = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "127.0.0.0/8", "0.0.0.0/8")

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUFFIX = "-service"


def object_name(sandbox_name: str) -> str:
    """A DNS-1035 label (what Service names must be; Pods accept it too) of at most 55
    characters, so that ``<it>-service`` stays within 63: the sandbox name lowercased with every
    other character as ``-``, cut, and a digest of the whole name (names that differ only in
    case or punctuation stay apart)."""
    digest = hashlib.sha256(sandbox_name.encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", sandbox_name.lower()).strip("-")
    readable = readable[:63 - len(_SUFFIX) - len(digest) - 1].strip("-")
    if not readable or not readable[0].isalpha():
        readable = ("s-" + readable)[:63 - len(_SUFFIX) - len(digest) - 1].strip("-")
    return f"{readable}-{digest}"


def service_name(name: str) -> str:
    return name + _SUFFIX


def is_object_name(text: str) -> bool:
    return len(text) <= 63 - len(_SUFFIX) and bool(_DNS_LABEL.match(text))


def valid_dns_label(text: str) -> bool:
    return len(text) <= 63 and bool(re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", text))


def label_value(value: str) -> str:
    """``value`` if Kubernetes accepts it as a label value, else ``h`` and a digest of it."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    return "h" + hashlib.sha256(value.encode()).hexdigest()[:40]


def selector(labels: dict[str, str]) -> str:
    """The label selector that finds the fleet's objects carrying all of ``labels`` (a superset,
    where a label is not selectable: callers check the exact labels with ``matches``)."""
    parts = [f"{MANAGED_BY[0]}={MANAGED_BY[1]}"]
    parts += [f"{k}={label_value(v)}" for k, v in sorted(labels.items()) if k in SELECTABLE]
    return ",".join(parts)


def fleet_labels(metadata: Any) -> dict[str, str]:
    """The exact fleet labels of an object (client model or dict metadata)."""
    annotations = _get(metadata, "annotations") or {}
    try:
        return json.loads(annotations.get(ANNOTATION_LABELS) or "{}")
    except ValueError:
        return {}


def matches(metadata: Any, labels: dict[str, str]) -> bool:
    return fleet_labels(metadata).items() >= labels.items()


def metadata(name: str, spec: ContainerSpec, object_name_: str | None = None) -> dict:
    return {
        "name": object_name_ or name,
        "labels": {MANAGED_BY[0]: MANAGED_BY[1], LABEL_OBJECT: name,
                   **{k: label_value(v) for k, v in spec.labels.items() if k in SELECTABLE}},
        "annotations": {ANNOTATION_LABELS: json.dumps(spec.labels, sort_keys=True),
                        ANNOTATION_NAME: spec.name, ANNOTATION_PORT: str(spec.host_port),
                        ANNOTATION_WORKSPACE: spec.workspace or ""},
    }


def quantity_memory(docker_size: str) -> str:
    """Docker's ``512m`` / ``2g`` as a Kubernetes quantity in bytes (what the runtime applies)."""
    return str(limits.size_bytes(docker_size, "memory"))


def parse_quantity(text: str | None) -> float | None:
    """A Kubernetes quantity (``256Mi``, ``1500m``, ``2``) as a number."""
    if not text:
        return None
    binary = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}
    decimal = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in binary.items():
        if text.endswith(suffix):
            return float(text[:-2]) * factor
    if text[-1] in decimal:
        return float(text[:-1]) * decimal[text[-1]]
    return float(text)


def pod(name: str, spec: ContainerSpec, *, workspace: str, token: str | None,
        capabilities: list[str]) -> dict:
    """The sandbox's Pod: the agent on port 80, ready when its /healthz answers."""
    resources: dict[str, str] = {}
    if spec.memory:
        resources["memory"] = quantity_memory(spec.memory)
    if spec.cpus:
        resources["cpu"] = f"{int(round(spec.cpus * 1000))}m"
    if workspace == "hostpath" and spec.workspace:
        workspace_volume = {"name": "workspace",
                            "hostPath": {"path": spec.workspace, "type": "DirectoryOrCreate"}}
    else:
        workspace_volume = {"name": "workspace", "emptyDir": {}}
        if spec.workspace_quota:
            workspace_volume["emptyDir"]["sizeLimit"] = str(spec.workspace_quota)
    volumes = [workspace_volume]
    mounts = [{"name": "workspace", "mountPath": "/workspace"}]
    for i, (host_path, container_path) in enumerate(sorted(spec.readonly_mounts.items())):
        volumes.append({"name": f"readonly-{i}", "hostPath": {"path": host_path}})
        mounts.append({"name": f"readonly-{i}", "mountPath": container_path, "readOnly": True})
    probe: dict[str, Any] = {"tcpSocket": {"port": AGENT_PORT}}
    if token:  # the agent answers /healthz only to its own secret
        probe = {"httpGet": {"path": "/fastapi/healthz", "port": AGENT_PORT, "httpHeaders": [
            {"name": "Authorization", "value": f"Bearer {token}"}]}}
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": metadata(name, spec),
        "spec": {
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,  # a sandbox gets no API credentials
            "enableServiceLinks": False,  # nor the namespace's service addresses
            "terminationGracePeriodSeconds": 2,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "sandbox", "image": spec.image, "imagePullPolicy": "IfNotPresent",
                "env": [{"name": k, "value": v} for k, v in sorted(spec.environment.items())],
                "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
                "resources": {"limits": resources, "requests": dict(resources)},
                "readinessProbe": {**probe, "periodSeconds": 1, "timeoutSeconds": 2,
                                   "failureThreshold": 3},
                "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                    "capabilities": {"drop": ["ALL"], "add": capabilities}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }
    return manifest


def owned_by(pod_name: str, pod_uid: str) -> list[dict]:
    """An ownerReference to the Pod: the cluster's garbage collector removes the Service and
    the policy with it even when no worker is left to."""
    return [{"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}]


def service(name: str, spec: ContainerSpec, owner_uid: str) -> dict:
    """The NodePort Service: the agent at <node>:<spec.host_port>."""
    meta = metadata(name, spec, service_name(name))
    meta["ownerReferences"] = owned_by(name, owner_uid)
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "NodePort", "selector": {LABEL_OBJECT: name},
                 "ports": [{"name": "agent", "port": AGENT_PORT, "targetPort": AGENT_PORT,
                            "protocol": "TCP", "nodePort": spec.host_port}]},
    }


def network_policy(name: str, spec: ContainerSpec, *, worker_labels: dict[str, str],
                   worker_cidrs: tuple[str, ...]) -> dict:
    """Ingress to the agent's port only from the fleet's workers; egress per the type's
    setting: ``none`` nothing, ``lan`` everything, ``open`` public addresses (plus the type's
    ``egress_allow``) and the cluster's DNS."""
    sources: list[dict] = [{"ipBlock": {"cidr": cidr}} for cidr in worker_cidrs]
    if worker_labels:
        sources.append({"podSelector": {"matchLabels": worker_labels}})
    ingress = [{"from": sources, "ports": [{"protocol": "TCP", "port": AGENT_PORT}]}] \
        if sources else []
    if spec.egress == "none":
        egress: list[dict] = []
    elif spec.egress == "lan":
        egress = [{}]
    else:
        egress = [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC)}},
                    *({"ipBlock": {"cidr": cidr}} for cidr in spec.egress_allow)]},
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata(name, spec),
        "spec": {"podSelector": {"matchLabels": {LABEL_OBJECT: name}},
                 "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
