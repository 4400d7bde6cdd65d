"""TEST-ONLY: ``FakeFunctionComputeControlPlane``, a local stand-in for Function Compute 3.0's API
(2023-03-30).

It serves the calls the fleet's backend makes, as the official SDK sends them (ROA, JSON,
ACS3-HMAC-SHA256 signed: checked), and models what the backend must cope with:

- a function is ``Pending`` until its instance (the image run by the local Docker engine) is up
  after ``ready_delay`` seconds, then ``Active``; an image Docker does not have makes it
  ``Failed`` (``ImagePullFailed``);
- an HTTP trigger's ``urlInternet`` is on the fake data plane (a path under 127.0.0.1:<port>),
  which requires the function's session-affinity header; a reserved concurrency of 0 stops the
  instance and the URL answers 429;
- a function with triggers cannot be deleted (409);
- names (1-64 characters), sizes (64 MB and 0.05 vCPU steps, 1-4 GB per vCPU), descriptions
  (256) and the session-affinity configuration are validated.

Plus ``fail``/``delay`` of any action (``FakeControlPlane``). Never use it outside the tests.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from .acs3 import Rejection
from .fake_cloud import FakeControlPlane, Instance, Route, ServiceError, request_id

VERSION = "2023-03-30"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")


class FakeFunctionComputeControlPlane(FakeControlPlane):
    service = "fc"

    def __init__(self, access_key_id: str, access_key_secret: str, *, ready_delay: float = 0.5) -> None:
        super().__init__(access_key_id, access_key_secret)
        self.ready_delay = ready_delay
        self.functions: dict[str, dict] = {}
        self.triggers: dict[str, dict[str, dict]] = {}
        self.concurrency: dict[str, int] = {}

    def resources(self) -> list[str]:
        """Names of every function and trigger (as function/trigger) that exists."""
        with self.lock:
            return sorted(list(self.functions) + [f"{f}/{t}" for f, ts in self.triggers.items()
                                                  for t in ts])

    def function(self, name: str) -> dict | None:
        with self.lock:
            found = self.functions.get(name)
            return dict(found) if found else None

    # -- the API -------------------------------------------------------------------------------

    def error_body(self, rejection: Rejection) -> dict:
        return {"Code": rejection.code, "Message": rejection.message, "RequestId": request_id()}

    def route(self, method: str, path: list[str], query: dict[str, str], body: dict) -> tuple[int, Any]:
        if path[:2] != [VERSION, "functions"]:
            raise ServiceError(404, "PathNotSupported", f"{method} /{'/'.join(path)}")
        rest = path[2:]
        with self.lock:
            if not rest:
                if method == "POST":
                    return 200, self._create(body)
                return 200, self._list(query)
            function = self._function(rest[0])
            name = function["functionName"]
            if len(rest) == 1 and method == "GET":
                return 200, function
            if len(rest) == 1 and method == "DELETE":
                if self.triggers.get(name):
                    raise ServiceError(409, "FunctionNotEmpty",
                                       f"function {name} still has triggers")
                del self.functions[name]
                self.concurrency.pop(name, None)
                self.instances.delete(name)
                return 204, None
            if rest[1] == "concurrency":
                return self._concurrency(method, name, body)
            if rest[1] == "triggers":
                return self._trigger(method, function, rest[2:], body)
        raise ServiceError(404, "PathNotSupported", f"{method} /{'/'.join(path)}")

    def _function(self, name: str) -> dict:
        if name not in self.functions:
            raise ServiceError(404, "FunctionNotFound", f"function '{name}' does not exist")
        return self.functions[name]

    def _list(self, query: dict[str, str]) -> dict:
        limit = int(query.get("limit", 20))
        if not 1 <= limit <= 100:
            raise ServiceError(400, "InvalidArgument", "limit must be 1 to 100")
        names = sorted(n for n in self.functions if n.startswith(query.get("prefix", "")))
        start = names.index(query["nextToken"]) if query.get("nextToken") in names else 0
        page = names[start:start + limit]
        token = names[start + limit] if len(names) > start + limit else None
        return {"functions": [self.functions[n] for n in page], **({"nextToken": token} if token else {})}

    def _create(self, body: dict) -> dict:
        name = body["functionName"]
        if not _NAME.match(name):
            raise ServiceError(400, "InvalidArgument", f"functionName {name!r} is invalid")
        if name in self.functions:
            raise ServiceError(409, "FunctionAlreadyExists", f"function '{name}' already exists")
        config = body["customContainerConfig"]
        if body.get("runtime") != "custom-container" or not config.get("image"):
            raise ServiceError(400, "InvalidArgument", "a custom-container function needs an image")
        cpu, memory = float(body["cpu"]), int(body["memorySize"])
        if memory % 64 or round(cpu * 100) % 5 or not cpu <= memory / 1024 <= cpu * 4:
            raise ServiceError(400, "InvalidArgument", f"cpu {cpu} and memorySize {memory} do not fit")
        if len(body.get("description") or "") > 256:
            raise ServiceError(400, "InvalidArgument", "description is longer than 256")
        if body.get("sessionAffinity") == "HEADER_FIELD":
            json.loads(body["sessionAffinityConfig"])["affinityHeaderFieldName"]
        function = {**body, "functionId": str(uuid.uuid4()), "state": "Pending",
                    "stateReason": "", "stateReasonCode": "Creating",
                    "lastUpdateStatus": "Successful", "createdTime": time.time(),
                    "functionArn": f"acs:fc:cn-hangzhou:0:functions/{name}"}
        self.functions[name] = function
        instance = Instance(name, config["image"], dict(body.get("environmentVariables") or {}),
                            memory, cpu)

        def done(ran: Instance) -> None:
            with self.lock:
                if ran.error:
                    function.update(state="Failed", stateReasonCode="ImagePullFailed",
                                    stateReason=ran.error)
                else:
                    function.update(state="Active", stateReasonCode="", stateReason="")

        self.instances.launch(instance, self.ready_delay, self.stopping, done)
        return dict(function)

    def _concurrency(self, method: str, name: str, body: dict) -> tuple[int, Any]:
        if method == "PUT":
            self.concurrency[name] = int(body["reservedConcurrency"])
            if self.concurrency[name] == 0:
                self.instances.stop(name)
            return 200, {"functionName": name, "reservedConcurrency": self.concurrency[name]}
        if name not in self.concurrency:
            raise ServiceError(404, "ConcurrencyConfigNotFound", f"no concurrency config for {name}")
        if method == "DELETE":
            self.concurrency.pop(name)
            self.instances.start(name)
            return 204, None
        return 200, {"functionName": name, "reservedConcurrency": self.concurrency[name]}

    def _trigger(self, method: str, function: dict, rest: list[str], body: dict) -> tuple[int, Any]:
        name = function["functionName"]
        triggers = self.triggers.setdefault(name, {})
        if not rest and method == "POST":
            trigger_name = body["triggerName"]
            if trigger_name in triggers:
                raise ServiceError(409, "TriggerAlreadyExists", f"trigger {trigger_name} exists")
            if body.get("triggerType") != "http":
                raise ServiceError(400, "InvalidArgument", "only http triggers here")
            header = json.loads(function.get("sessionAffinityConfig") or "{}").get(
                "affinityHeaderFieldName", "x-fc-session-id")
            prefix = f"/fc/{name}/{trigger_name}"
            url = self.data_plane.add(prefix, Route(name, header, (429, {
                "Code": "ReservedConcurrencyExhausted", "Message": "reserved concurrency is 0"})))
            trigger = {**body, "triggerId": str(uuid.uuid4()), "qualifier": "LATEST",
                       "status": "Active", "createdTime": time.time(), "_prefix": prefix,
                       "httpTrigger": {"urlInternet": url, "urlIntranet": url}}
            triggers[trigger_name] = trigger
            return 200, trigger
        if not rest:
            return 200, {"triggers": list(triggers.values())}
        if rest[0] not in triggers:
            raise ServiceError(404, "TriggerNotFound", f"trigger {rest[0]} does not exist")
        if method == "DELETE":
            self.data_plane.remove(triggers.pop(rest[0])["_prefix"])
            if not triggers:
                self.triggers.pop(name)
            return 204, None
        return 200, triggers[rest[0]]
