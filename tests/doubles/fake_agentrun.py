"""TEST-ONLY: ``FakeAgentRunControlPlane``, a local stand-in for AgentRun's API (2025-09-10).

It serves the calls the fleet's backend makes, as the official SDK sends them (ROA, JSON,
ACS3-HMAC-SHA256 signed: checked), and models what the backend must cope with:

- a runtime is ``CREATING`` until its instance (the image run by the local Docker engine) is up
  after ``ready_delay`` seconds, then ``READY``; an image Docker does not have makes it
  ``CREATE_FAILED`` with the reason;
- an endpoint is ``CREATING`` for ``endpoint_delay`` seconds, then ``READY`` with an
  ``endpointPublicUrl`` on the fake data plane (a path under 127.0.0.1:<port>) that requires the
  runtime's session-affinity header; ``disablePublicNetworkAccess`` stops the instance and the
  URL answers 403;
- a runtime with endpoints cannot be deleted (409); deleted resources are ``DELETING`` for
  ``delete_delay`` seconds, then gone (the instance with them);
- names, sizes and descriptions are validated (the limits the backend promises to keep).

Plus ``fail``/``delay`` of any action (``FakeControlPlane``). Never use it outside the tests.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

from .acs3 import Rejection
from .fake_cloud import FakeControlPlane, Instance, Route, ServiceError, request_id

VERSION = "2025-09-10"
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,63}$")


class FakeAgentRunControlPlane(FakeControlPlane):
    service = "agentrun"

    def __init__(self, access_key_id: str, access_key_secret: str, *, ready_delay: float = 0.5,
                 endpoint_delay: float = 0.3, delete_delay: float = 0.3) -> None:
        super().__init__(access_key_id, access_key_secret)
        self.ready_delay, self.endpoint_delay, self.delete_delay = ready_delay, endpoint_delay, delete_delay
        self.runtimes: dict[str, dict] = {}  # id -> runtime
        self.endpoints: dict[str, dict[str, dict]] = {}  # runtime id -> endpoint id -> endpoint

    # -- what the tests look at ----------------------------------------------------------------

    def resources(self) -> list[str]:
        """Names of every runtime (and endpoint, as runtime/endpoint) that exists, deleting or not."""
        with self.lock:
            return sorted([r["agentRuntimeName"] for r in self.runtimes.values()] +
                          [f"{self.runtimes[rid]['agentRuntimeName']}/{e['agentRuntimeEndpointName']}"
                           for rid, eps in self.endpoints.items() for e in eps.values()])

    def runtime_named(self, name: str) -> dict | None:
        with self.lock:
            return next((dict(r) for r in self.runtimes.values() if r["agentRuntimeName"] == name), None)

    # -- the API -------------------------------------------------------------------------------

    def error_body(self, rejection: Rejection) -> dict:
        return {"code": rejection.code, "message": rejection.message, "requestId": request_id()}

    def route(self, method: str, path: list[str], query: dict[str, str], body: dict) -> tuple[int, Any]:
        if path[:3] != [VERSION, "agents", "runtimes"]:
            raise ServiceError(404, "PathNotSupported", f"{method} /{'/'.join(path)}")
        rest = path[3:]
        with self.lock:
            if not rest:
                if method == "POST":
                    return self._ok(self._create_runtime(body))
                return self._ok(self._list(list(self.runtimes.values()), query, "agentRuntimeName"))
            runtime = self._runtime(rest[0])
            if len(rest) == 1:
                if method == "GET":
                    return self._ok(runtime)
                if method == "DELETE":
                    return self._ok(self._delete_runtime(runtime))
            elif rest[1] == "endpoints":
                endpoints = self.endpoints.setdefault(runtime["agentRuntimeId"], {})
                if len(rest) == 2 and method == "POST":
                    return self._ok(self._create_endpoint(runtime, body))
                if len(rest) == 2 and method == "GET":
                    return self._ok(self._list(list(endpoints.values()), query,
                                               "agentRuntimeEndpointName"))
                endpoint = endpoints.get(rest[2])
                if endpoint is None:
                    raise ServiceError(404, "AgentRuntimeEndpointNotFound",
                                       f"endpoint {rest[2]} does not exist")
                if method == "GET":
                    return self._ok(endpoint)
                if method == "PUT":
                    return self._ok(self._update_endpoint(runtime, endpoint, body))
                if method == "DELETE":
                    return self._ok(self._delete_endpoint(runtime, endpoint))
        raise ServiceError(404, "PathNotSupported", f"{method} /{'/'.join(path)}")

    def _ok(self, data: Any) -> tuple[int, dict]:
        return 200, {"code": "SUCCESS", "requestId": request_id(), "data": data}

    def _runtime(self, runtime_id: str) -> dict:
        runtime = self.runtimes.get(runtime_id)
        if runtime is None:
            raise ServiceError(404, "AgentRuntimeNotFound", f"agent runtime {runtime_id} does not exist")
        return runtime

    def _list(self, items: list[dict], query: dict[str, str], key: str) -> dict:
        wanted, mode = query.get("agentRuntimeName") or query.get("endpointName"), query.get("searchMode")
        if wanted:
            test = {"exact": str.__eq__, "prefix": str.startswith}.get(mode, str.__contains__)
            items = [i for i in items if test(i[key], wanted)]
        size, page = int(query.get("pageSize", 20)), int(query.get("pageNumber", 1))
        if not 1 <= size <= 100:
            raise ServiceError(400, "InvalidParameter", "pageSize must be 1 to 100")
        items = sorted(items, key=lambda i: i["createdAt"])
        return {"items": items[(page - 1) * size:page * size], "pageNumber": page,
                "pageSize": size, "total": len(items)}

    def _create_runtime(self, body: dict) -> dict:
        name = body["agentRuntimeName"]
        if not _NAME.match(name):
            raise ServiceError(400, "InvalidParameter", f"agentRuntimeName {name!r} is invalid")
        if any(r["agentRuntimeName"] == name for r in self.runtimes.values()):
            raise ServiceError(409, "AgentRuntimeAlreadyExists", f"agent runtime {name} exists")
        if body.get("artifactType") != "Container" or not body["containerConfiguration"]["image"]:
            raise ServiceError(400, "InvalidParameter", "a Container runtime needs an image")
        if len(body.get("description") or "") > 256:
            raise ServiceError(400, "InvalidParameter", "description is longer than 256")
        cpu, memory = float(body["cpu"]), int(body["memory"])
        if memory % 64 or round(cpu * 100) % 5 or not cpu <= memory / 1024 <= cpu * 4:
            raise ServiceError(400, "InvalidParameter", f"cpu {cpu} and memory {memory} do not fit")
        if body["networkConfiguration"]["networkMode"] not in ("PUBLIC", "PRIVATE", "PUBLIC_AND_PRIVATE"):
            raise ServiceError(400, "InvalidParameter", "networkMode")
        runtime_id = str(uuid.uuid4())
        runtime = {**body, "agentRuntimeId": runtime_id, "status": "CREATING", "statusReason": "",
                   "agentRuntimeVersion": "1", "createdAt": time.time(),
                   "agentRuntimeArn": f"acs:agentrun:cn-hangzhou:0:runtimes/{runtime_id}"}
        self.runtimes[runtime_id] = runtime
        instance = Instance(runtime_id, body["containerConfiguration"]["image"],
                            dict(body.get("environmentVariables") or {}), memory, cpu)

        def done(ran: Instance) -> None:
            with self.lock:
                if ran.error:
                    runtime.update(status="CREATE_FAILED", statusReason=ran.error)
                elif runtime["status"] == "CREATING":
                    runtime["status"] = "READY"

        self.instances.launch(instance, self.ready_delay, self.stopping, done)
        return dict(runtime)

    def _delete_runtime(self, runtime: dict) -> dict:
        if self.endpoints.get(runtime["agentRuntimeId"]):
            raise ServiceError(409, "AgentRuntimeHasEndpoints",
                               "delete the runtime's endpoints before the runtime")
        runtime["status"] = "DELETING"
        self._later(self.delete_delay, lambda: self._forget_runtime(runtime["agentRuntimeId"]))
        return dict(runtime)

    def _forget_runtime(self, runtime_id: str) -> None:
        with self.lock:
            self.runtimes.pop(runtime_id, None)
            self.endpoints.pop(runtime_id, None)
        self.instances.delete(runtime_id)

    def _create_endpoint(self, runtime: dict, body: dict) -> dict:
        if runtime["status"] not in ("READY", "ACTIVE"):
            raise ServiceError(409, "AgentRuntimeNotReady", f"runtime is {runtime['status']}")
        endpoints = self.endpoints[runtime["agentRuntimeId"]]
        name = body["agentRuntimeEndpointName"]
        if any(e["agentRuntimeEndpointName"] == name for e in endpoints.values()):
            raise ServiceError(409, "AgentRuntimeEndpointAlreadyExists", f"endpoint {name} exists")
        endpoint_id = str(uuid.uuid4())
        prefix = f"/agent-runtimes/{runtime['agentRuntimeName']}/endpoints/{name}/invocations"
        endpoint = {"agentRuntimeEndpointId": endpoint_id, "agentRuntimeEndpointName": name,
                    "agentRuntimeId": runtime["agentRuntimeId"], "status": "CREATING",
                    "statusReason": "", "targetVersion": body.get("targetVersion", "LATEST"),
                    "description": body.get("description", ""), "createdAt": time.time(),
                    "disablePublicNetworkAccess": bool(body.get("disablePublicNetworkAccess")),
                    "_prefix": prefix}
        endpoints[endpoint_id] = endpoint

        def ready() -> None:
            with self.lock:
                if endpoint["status"] == "CREATING":
                    endpoint["status"] = "READY"
                    endpoint["endpointPublicUrl"] = self.data_plane.add(prefix, Route(
                        runtime["agentRuntimeId"], runtime.get("headerFieldName") or
                        "x-agentrun-session-id",
                        (403, {"code": "PublicNetworkAccessDisabled", "message": "disabled"})))

        self._later(self.endpoint_delay, ready)
        return dict(endpoint)

    def _update_endpoint(self, runtime: dict, endpoint: dict, body: dict) -> dict:
        if "disablePublicNetworkAccess" in body:
            disabled = bool(body["disablePublicNetworkAccess"])
            endpoint["disablePublicNetworkAccess"] = disabled
            (self.instances.stop if disabled else self.instances.start)(runtime["agentRuntimeId"])
        return dict(endpoint)

    def _delete_endpoint(self, runtime: dict, endpoint: dict) -> dict:
        endpoint["status"] = "DELETING"
        self.data_plane.remove(endpoint["_prefix"])

        def forget() -> None:
            with self.lock:
                self.endpoints.get(runtime["agentRuntimeId"], {}).pop(
                    endpoint["agentRuntimeEndpointId"], None)

        self._later(self.delete_delay, forget)
        return dict(endpoint)

    def _later(self, seconds: float, action) -> None:
        def run() -> None:
            if not self.stopping.wait(seconds):
                action()

        threading.Thread(target=run, daemon=True, name="fake-agentrun-later").start()
