"""Function Compute 3.0 (Alibaba Cloud): each sandbox a custom-container function plus an HTTP
trigger.

The agent is reached at the trigger's URL, exactly as Function Compute gives it (scheme, host,
port and path). The function is session-exclusive with affinity on the
``x-agentscope-runtime-session-id`` header (upstream's), which the worker sends with every call,
so one sandbox's calls reach one instance. Function Compute cannot stop a function: ``stop`` sets
its reserved concurrency to 0 (nothing runs, calls are refused, the URL stays) and ``start``
removes that again. Names, labels and errors: ``backends.cloud``; the set-up and what is tested:
docs/backends.md ("AgentRun and Function Compute").
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from alibabacloud_fc20230330 import models
from alibabacloud_fc20230330.client import Client

from sandbox_core.errors import BackendError, SettingsError

from . import cloud
from .base import Container, ContainerSpec

log = logging.getLogger(__name__)

TRIGGER_NAME = "sandbox-http"
AFFINITY_HEADER = "x-agentscope-runtime-session-id"
AFFINITY = json.dumps({"affinityHeaderFieldName": AFFINITY_HEADER, "sessionTTLInSeconds": 21600,
                       "sessionConcurrencyPerInstance": 1, "sessionIdleTimeoutInSeconds": 3600})
#: Longest single call into the sandbox (the worker's agent job allows an hour).
CALL_LIMIT = 3600
PAGE = 100


class FCBackend(cloud.CloudBackend):
    name = deployment = "fc"
    service = "Function Compute"
    prefix_setting = "FC_PREFIX"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        s = settings
        self.vpc = _vpc(s)
        self.log_config = _log_config(s)
        endpoint = s.FC_ENDPOINT or f"{s.FC_ACCOUNT_ID}.{s.FC_REGION_ID}.fc.aliyuncs.com"
        config = cloud.client_config(
            service="fc", access_key_id=s.FC_ACCESS_KEY_ID,
            access_key_secret=s.FC_ACCESS_KEY_SECRET, region=s.FC_REGION_ID, endpoint=endpoint,
            protocol=s.FC_PROTOCOL, variables="FC")
        self.api = cloud.Api(Client(config), service="Function Compute", endpoint=endpoint,
                             variables="FC")
        self.check_access(lambda: self._list_page(None, 1))

    def default_limits(self) -> dict:
        return cloud.default_limits(self.settings.FC_MEMORY, self.settings.FC_CPU)

    @classmethod
    def check_settings(cls, settings) -> None:
        super().check_settings(settings)
        if not settings.FC_ENDPOINT and not settings.FC_ACCOUNT_ID:
            raise SettingsError("CONTAINER_DEPLOYMENT=fc needs FC_ACCOUNT_ID (its endpoint is "
                                "<FC_ACCOUNT_ID>.<FC_REGION_ID>.fc.aliyuncs.com), or FC_ENDPOINT")
        cloud.require_keys("fc", settings.FC_ACCESS_KEY_ID, settings.FC_ACCESS_KEY_SECRET, "FC")
        _vpc(settings)
        _log_config(settings)

    # -- the Backend interface -----------------------------------------------------------------

    def inspect(self, container_id: str) -> Container | None:
        for name in self._candidates(container_id):
            function = self._get(name)
            if function is not None:
                return self._container(function, full=True)
        return None

    def list(self, labels: dict[str, str]) -> list[Container]:
        found = []
        for function in self._functions():
            container = self._container(function, full=False)
            if container is not None and cloud.matches(container.labels, labels):
                found.append(container)
        return found

    def stop(self, container_id: str, timeout: int = 1) -> None:
        name = self._existing(container_id)
        body = models.PutConcurrencyInput(reserved_concurrency=0)
        self.api.call(f"stop {container_id} (reserved concurrency 0)",
                      self.api.client.put_concurrency_config, name,
                      models.PutConcurrencyConfigRequest(body=body))

    def start(self, container_id: str) -> None:
        name = self._existing(container_id)
        self.api.call(f"start {container_id} (its concurrency limit removed)",
                      self.api.client.delete_concurrency_config, name, missing_ok=True)

    # -- creating ------------------------------------------------------------------------------

    def _make(self, name: str, spec: ContainerSpec, deadline: float) -> str:
        self._create_function(name, spec)
        self._wait_active(spec, name, deadline)
        return self._create_trigger(name, spec)

    def _create_function(self, name: str, spec: ContainerSpec) -> None:
        s = self.settings
        memory, cpus = cloud.instance_size(spec.memory, spec.cpus, s.FC_MEMORY, s.FC_CPU)
        body = models.CreateFunctionInput(
            function_name=name, runtime="custom-container",
            custom_container_config=models.CustomContainerConfig(image=spec.image, port=80),
            cpu=cpus, memory_size=memory, disk_size=512, timeout=CALL_LIMIT,
            instance_concurrency=200, internet_access=True,
            environment_variables=dict(spec.environment), session_affinity="HEADER_FIELD",
            session_affinity_config=AFFINITY, instance_isolation_mode="SESSION_EXCLUSIVE",
            vpc_config=self.vpc, log_config=self.log_config, description=cloud.description(spec))
        self.api.call(f"create the function of {spec.name}", self.api.client.create_function,
                      models.CreateFunctionRequest(body=body))

    def _wait_active(self, spec: ContainerSpec, name: str, deadline: float) -> None:
        last = ["Pending"]

        def active() -> bool:
            function = self._get(name)
            if function is None:
                raise BackendError(f"sandbox {spec.name}: its function was deleted while it "
                                   "started")
            last[0] = f"{function.state} {function.state_reason_code or ''} " \
                      f"{function.state_reason or ''}".strip()
            if function.state == "Failed":
                raise cloud.failure(spec, "Function Compute", f"function {function.state_reason_code}",
                                    function.state_reason)
            return function.state == "Active"

        cloud.wait(active, deadline, lambda: f"sandbox {spec.name}: its function was not active "
                   f"within {self.settings.FLEET_CREATE_TIMEOUT}s ({last[0]})")

    def _create_trigger(self, name: str, spec: ContainerSpec) -> str:
        config = json.dumps({"authType": "anonymous",
                             "methods": ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]})
        body = models.CreateTriggerInput(trigger_name=TRIGGER_NAME, trigger_type="http",
                                         trigger_config=config, qualifier="LATEST",
                                         description=f"the agent of sandbox {spec.name}"[:256])
        trigger = self.api.call(f"create the HTTP trigger of {spec.name}",
                                self.api.client.create_trigger, name,
                                models.CreateTriggerRequest(body=body)).body
        http = trigger.http_trigger if trigger else None
        return cloud.agent_url(http.url_internet if http else None,
                               f"sandbox {spec.name}'s HTTP trigger")

    # -- removing ------------------------------------------------------------------------------

    def _delete(self, name: str, sandbox: str) -> None:
        """Triggers first (a function with triggers is not deleted), then the function. Gone
        already is fine."""
        if self._get(name) is None:
            return
        for trigger in self._triggers(name):
            self.api.call(f"delete the trigger of {sandbox}", self.api.client.delete_trigger,
                          name, trigger.trigger_name, missing_ok=True)
        self.api.call(f"delete the function of {sandbox}", self.api.client.delete_function, name,
                      missing_ok=True)
        cloud.wait(lambda: self._get(name) is None, time.monotonic() + cloud.DELETE_WAIT,
                   lambda: f"sandbox {sandbox}: function {name} was still there "
                   f"{cloud.DELETE_WAIT}s after its deletion")
        log.info("sandbox %s: function %s deleted", sandbox, name)

    # -- reading -------------------------------------------------------------------------------

    def _existing(self, container_id: str) -> str:
        for name in self._candidates(container_id):
            if self._get(name) is not None:
                return name
        raise BackendError(f"sandbox {container_id} does not exist (no such function)")

    def _get(self, name: str) -> Any:
        response = self.api.call(f"read function {name}", self.api.client.get_function, name,
                                 models.GetFunctionRequest(qualifier="LATEST"), missing_ok=True)
        return response.body if response is not None else None

    def _list_page(self, token: str | None, limit: int) -> tuple[list[Any], str | None]:
        request = models.ListFunctionsRequest(prefix=f"{self.prefix}-", limit=limit,
                                              next_token=token)
        body = self.api.call("list functions", self.api.client.list_functions, request).body
        return list(body.functions or []), body.next_token or None

    def _functions(self) -> list[Any]:
        found, token = [], None
        while True:
            functions, token = self._list_page(token, PAGE)
            found += [f for f in functions if (f.function_name or "").startswith(self.prefix + "-")]
            if not token:
                return found

    def _triggers(self, name: str) -> list[Any]:
        response = self.api.call(f"list the triggers of {name}", self.api.client.list_triggers,
                                 name, models.ListTriggersRequest(limit=PAGE), missing_ok=True)
        return list(response.body.triggers or []) if response is not None else []

    def _stopped(self, name: str) -> bool:
        response = self.api.call(f"read the concurrency of {name}",
                                 self.api.client.get_concurrency_config, name, missing_ok=True)
        return response is not None and response.body.reserved_concurrency == 0

    def _container(self, function: Any, full: bool) -> Container | None:
        carried = cloud.read_description(function.description)
        if carried is None:
            return None  # a function with the prefix the fleet did not make
        labels, port = carried
        name = function.function_name
        status = {"Active": "running", "Pending": "created", "Failed": "exited"}.get(
            function.state, "unknown")
        found = Container(id=name, status=status, labels=labels,
                          name=labels.get("io.sandbox-fleet.name", name))
        if full:
            if status == "running" and self._stopped(name):
                found.status = "exited"
            found.host_port = port
            config = function.custom_container_config
            found.image = config.image if config else None
            found.environment = dict(function.environment_variables or {})
            trigger = next((t for t in self._triggers(name) if t.trigger_name == TRIGGER_NAME), None)
            if trigger is not None and trigger.http_trigger and trigger.http_trigger.url_internet:
                found.url = trigger.http_trigger.url_internet.rstrip("/")
        return found


def _vpc(s) -> Any:
    vpc = (s.FC_VPC_ID, s.FC_VSWITCH_IDS, s.FC_SECURITY_GROUP_ID)
    if any(vpc) and not all(vpc):
        raise SettingsError("FC_VPC_ID, FC_VSWITCH_IDS and FC_SECURITY_GROUP_ID go together: set "
                            "all three or none")
    if all(vpc):
        return models.VPCConfig(vpc_id=s.FC_VPC_ID, v_switch_ids=list(s.FC_VSWITCH_IDS),
                                security_group_id=s.FC_SECURITY_GROUP_ID)
    return None


def _log_config(s) -> Any:
    if bool(s.FC_LOG_PROJECT) != bool(s.FC_LOG_STORE):
        raise SettingsError("FC_LOG_PROJECT and FC_LOG_STORE go together")
    if s.FC_LOG_PROJECT:
        return models.LogConfig(project=s.FC_LOG_PROJECT, logstore=s.FC_LOG_STORE,
                                enable_request_metrics=True, enable_instance_metrics=True,
                                log_begin_rule="DefaultRegex")
    return None
