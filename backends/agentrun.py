"""AgentRun (Alibaba Cloud): each sandbox an agent runtime of its image plus one endpoint.

The agent is reached at the endpoint's public URL, exactly as AgentRun gives it (scheme, host,
port and path), with session affinity on the ``x-agentrun-session-id`` header the worker sends
with every call, so one sandbox's calls reach one instance. ``stop`` closes the endpoint to the
public (``start`` opens it again: the URL stays). Names, labels and errors: ``backends.cloud``;
the set-up and what is tested: docs/backends.md ("AgentRun and Function Compute").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from alibabacloud_agentrun20250910 import models
from alibabacloud_agentrun20250910.client import Client

from sandbox_core.errors import BackendError, SettingsError, Unavailable

from . import cloud
from .base import Container, ContainerSpec

log = logging.getLogger(__name__)

ENDPOINT_NAME = "sandbox"
AFFINITY_HEADER = "x-agentrun-session-id"
READY = ("READY", "ACTIVE")
FAILED = ("CREATE_FAILED", "UPDATE_FAILED", "FAILED")
PAGE = 100


class AgentRunBackend(cloud.CloudBackend):
    name = deployment = "agentrun"
    service = "AgentRun"
    prefix_setting = "AGENT_RUN_PREFIX"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        s = settings
        self.network = _network(s)
        self.log_config = _log_config(s)
        endpoint = s.AGENT_RUN_ENDPOINT or f"agentrun.{s.AGENT_RUN_REGION_ID}.aliyuncs.com"
        config = cloud.client_config(
            service="agentrun", access_key_id=s.AGENT_RUN_ACCESS_KEY_ID,
            access_key_secret=s.AGENT_RUN_ACCESS_KEY_SECRET, region=s.AGENT_RUN_REGION_ID,
            endpoint=endpoint, protocol=s.AGENT_RUN_PROTOCOL, variables="AGENT_RUN")
        self.api = cloud.Api(Client(config), service="AgentRun", endpoint=endpoint,
                             variables="AGENT_RUN")
        self.check_access(lambda: self._list_page(1, 1))

    @classmethod
    def check_settings(cls, settings) -> None:
        super().check_settings(settings)
        cloud.require_keys("agentrun", settings.AGENT_RUN_ACCESS_KEY_ID,
                           settings.AGENT_RUN_ACCESS_KEY_SECRET, "AGENT_RUN")
        _network(settings)
        _log_config(settings)

    def default_limits(self) -> dict:
        return cloud.default_limits(self.settings.AGENT_RUN_MEMORY, self.settings.AGENT_RUN_CPU)

    # -- the Backend interface -----------------------------------------------------------------

    def inspect(self, container_id: str) -> Container | None:
        for name in self._candidates(container_id):
            runtime = self._find(name)
            if runtime is not None:
                return self._container(runtime, self._endpoint(runtime.agent_runtime_id))
        return None

    def list(self, labels: dict[str, str]) -> list[Container]:
        found = []
        for runtime in self._runtimes():
            container = self._container(runtime, None, full=False)
            if container is not None and cloud.matches(container.labels, labels):
                found.append(container)
        return found

    def stop(self, container_id: str, timeout: int = 1) -> None:
        self._public(container_id, False)

    def start(self, container_id: str) -> None:
        self._public(container_id, True)

    # -- creating ------------------------------------------------------------------------------

    def _make(self, name: str, spec: ContainerSpec, deadline: float) -> str:
        runtime_id = self._create_runtime(name, spec)
        self._wait_runtime(spec, runtime_id, deadline)
        return self._create_endpoint(spec, runtime_id, deadline)

    def _create_runtime(self, name: str, spec: ContainerSpec) -> str:
        s = self.settings
        memory, cpus = cloud.instance_size(spec.memory, spec.cpus, s.AGENT_RUN_MEMORY, s.AGENT_RUN_CPU)
        body = models.CreateAgentRuntimeInput(
            agent_runtime_name=name, artifact_type="Container",
            container_configuration=models.ContainerConfiguration(image=spec.image, port=80),
            cpu=cpus, memory=memory, port=80, environment_variables=dict(spec.environment),
            network_configuration=self.network, log_configuration=self.log_config,
            session_affinity_type="HEADER_FIELD", header_field_name=AFFINITY_HEADER,
            session_concurrency_limit_per_instance=1, description=cloud.description(spec))
        response = self.api.call(f"create the runtime of {spec.name}", self.api.client.create_agent_runtime,
                                 models.CreateAgentRuntimeRequest(body=body))
        return response.body.data.agent_runtime_id

    def _wait_runtime(self, spec: ContainerSpec, runtime_id: str, deadline: float) -> None:
        last = ["CREATING"]

        def ready() -> bool:
            runtime = self._get(runtime_id, f"read the runtime of {spec.name}")
            if runtime is None:
                raise BackendError(f"sandbox {spec.name}: its AgentRun runtime was deleted while "
                                   "it started")
            last[0] = f"{runtime.status} {runtime.status_reason or ''}".strip()
            if runtime.status in FAILED:
                raise cloud.failure(spec, "AgentRun", f"its runtime is {runtime.status}",
                                    runtime.status_reason)
            return runtime.status in READY

        cloud.wait(ready, deadline, lambda: f"sandbox {spec.name}: its AgentRun runtime was not "
                   f"ready within {self.settings.FLEET_CREATE_TIMEOUT}s ({last[0]})")

    def _create_endpoint(self, spec: ContainerSpec, runtime_id: str, deadline: float) -> str:
        body = models.CreateAgentRuntimeEndpointInput(
            agent_runtime_endpoint_name=ENDPOINT_NAME, target_version="LATEST",
            description=f"the agent of sandbox {spec.name}"[:cloud.DESCRIPTION_LIMIT])
        created = self.api.call(f"create the endpoint of {spec.name}",
                                self.api.client.create_agent_runtime_endpoint, runtime_id,
                                models.CreateAgentRuntimeEndpointRequest(body=body)).body.data
        return self._wait_endpoint(spec.name, runtime_id, created.agent_runtime_endpoint_id,
                                   deadline)

    def _wait_endpoint(self, sandbox: str, runtime_id: str, endpoint_id: str,
                       deadline: float) -> str:
        """The endpoint's URL once it is ready (its status READY or ACTIVE)."""
        last = ["CREATING"]

        def ready() -> str | None:
            endpoint = self.api.call(f"read the endpoint of {sandbox}",
                                     self.api.client.get_agent_runtime_endpoint, runtime_id,
                                     endpoint_id, missing_ok=True)
            if endpoint is None:
                raise BackendError(f"sandbox {sandbox}: its AgentRun endpoint was deleted while "
                                   "it started")
            data = endpoint.body.data
            last[0] = f"{data.status} {data.status_reason or ''}".strip()
            if data.status in FAILED:
                raise BackendError(f"sandbox {sandbox}: its AgentRun endpoint failed ({last[0]})")
            if data.status in READY:
                return cloud.agent_url(data.endpoint_public_url, f"sandbox {sandbox}'s endpoint")
            return None

        return cloud.wait(ready, deadline, lambda: f"sandbox {sandbox}: its AgentRun endpoint "
                          f"was not ready within {self.settings.FLEET_CREATE_TIMEOUT}s ({last[0]})")

    # -- stopping, starting and removing -------------------------------------------------------

    def _public(self, container_id: str, public: bool) -> None:
        runtime = next(filter(None, map(self._find, self._candidates(container_id))), None)
        endpoint = self._endpoint(runtime.agent_runtime_id) if runtime else None
        if endpoint is None:
            raise BackendError(f"sandbox {container_id} does not exist (no AgentRun runtime "
                               "with an endpoint)")
        body = models.UpdateAgentRuntimeEndpointInput(disable_public_network_access=not public)
        self.api.call(f"{'open' if public else 'close'} the endpoint of {container_id}",
                      self.api.client.update_agent_runtime_endpoint, runtime.agent_runtime_id,
                      endpoint.agent_runtime_endpoint_id,
                      models.UpdateAgentRuntimeEndpointRequest(body=body))
        if public:
            self._wait_endpoint(container_id, runtime.agent_runtime_id,
                                endpoint.agent_runtime_endpoint_id,
                                time.monotonic() + self.settings.FLEET_CREATE_TIMEOUT)

    def _delete(self, name: str, sandbox: str) -> None:
        """Endpoints first (a runtime with endpoints is not deleted), then the runtime; both
        until AgentRun has them gone or going. Gone already is fine."""
        runtime = self._find(name)
        if runtime is None:
            return
        runtime_id = runtime.agent_runtime_id
        for endpoint in self._endpoints(runtime_id):
            self.api.call(f"delete the endpoint of {sandbox}",
                          self.api.client.delete_agent_runtime_endpoint, runtime_id,
                          endpoint.agent_runtime_endpoint_id, missing_ok=True)
        deadline = time.monotonic() + cloud.DELETE_WAIT
        cloud.wait(lambda: not self._endpoints(runtime_id), deadline,
                   lambda: f"sandbox {sandbox}: AgentRun did not delete its endpoint in "
                   f"{cloud.DELETE_WAIT}s")
        self.api.call(f"delete the runtime of {sandbox}", self.api.client.delete_agent_runtime,
                      runtime_id, missing_ok=True)

        left = [runtime]

        def gone() -> bool:
            left[0] = self._get(runtime_id, f"read the runtime of {sandbox}")
            return left[0] is None

        try:
            cloud.wait(gone, deadline, lambda: f"sandbox {sandbox}: AgentRun did not delete its "
                       f"runtime {name} in {cloud.DELETE_WAIT}s")
        except Unavailable:
            if left[0] is None or left[0].status != "DELETING":
                raise
            log.warning("sandbox %s: AgentRun is still deleting runtime %s", sandbox, name)
            return
        log.info("sandbox %s: AgentRun runtime %s deleted", sandbox, name)

    # -- reading -------------------------------------------------------------------------------

    def _list_page(self, page: int, size: int, name: str | None = None, mode: str = "prefix"):
        request = models.ListAgentRuntimesRequest(
            agent_runtime_name=name or f"{self.prefix}-", search_mode=mode, page_number=page,
            page_size=size)
        data = self.api.call("list agent runtimes", self.api.client.list_agent_runtimes,
                             request).body.data
        return list(data.items or []) if data else []

    def _runtimes(self, name: str | None = None) -> list[Any]:
        """The runtimes named with the prefix (or exactly ``name``), every page."""
        found, page = [], 1
        while True:
            items = self._list_page(page, PAGE, name, "exact" if name else "prefix")
            found += [r for r in items if (r.agent_runtime_name == name if name else
                                           (r.agent_runtime_name or "").startswith(self.prefix + "-"))]
            if len(items) < PAGE:
                return found
            page += 1

    def _find(self, name: str) -> Any:
        runtimes = self._runtimes(name)
        return runtimes[0] if runtimes else None

    def _get(self, runtime_id: str, what: str) -> Any:
        response = self.api.call(what, self.api.client.get_agent_runtime, runtime_id,
                                 models.GetAgentRuntimeRequest(), missing_ok=True)
        return response.body.data if response is not None else None

    def _endpoints(self, runtime_id: str) -> list[Any]:
        response = self.api.call("list the endpoints of a runtime",
                                 self.api.client.list_agent_runtime_endpoints, runtime_id,
                                 models.ListAgentRuntimeEndpointsRequest(page_size=PAGE),
                                 missing_ok=True)
        data = response.body.data if response is not None else None
        return list(data.items or []) if data else []

    def _endpoint(self, runtime_id: str) -> Any:
        return next((e for e in self._endpoints(runtime_id)
                     if e.agent_runtime_endpoint_name == ENDPOINT_NAME), None)

    def _container(self, runtime: Any, endpoint: Any, full: bool = True) -> Container | None:
        carried = cloud.read_description(runtime.description)
        if carried is None:
            return None  # a runtime with the prefix the fleet did not make
        labels, port = carried
        status = _status(runtime.status, endpoint) if full else _status(runtime.status, "listed")
        found = Container(id=runtime.agent_runtime_name, status=status, labels=labels,
                          name=labels.get("io.sandbox-fleet.name", runtime.agent_runtime_name))
        if full:
            found.host_port = port
            config = runtime.container_configuration
            found.image = config.image if config else None
            found.environment = dict(runtime.environment_variables or {})
            if endpoint is not None and endpoint.endpoint_public_url:
                found.url = endpoint.endpoint_public_url.rstrip("/")
        return found


def _status(runtime_status: str | None, endpoint: Any) -> str:
    if runtime_status == "DELETING":
        return "removing"
    if runtime_status in FAILED:
        return "exited"
    if runtime_status not in READY:
        return "created"
    if endpoint == "listed":
        return "running"  # a listing reads no endpoints; inspect does
    if endpoint is None or endpoint.status not in READY:
        return "created"
    return "exited" if endpoint.disable_public_network_access else "running"


def _network(s) -> Any:
    vpc = (s.AGENT_RUN_VPC_ID, s.AGENT_RUN_VSWITCH_IDS, s.AGENT_RUN_SECURITY_GROUP_ID)
    if any(vpc) and not all(vpc):
        raise SettingsError("AGENT_RUN_VPC_ID, AGENT_RUN_VSWITCH_IDS and "
                            "AGENT_RUN_SECURITY_GROUP_ID go together: set all three or none")
    if all(vpc):
        return models.NetworkConfiguration(
            network_mode="PUBLIC_AND_PRIVATE", vpc_id=s.AGENT_RUN_VPC_ID,
            security_group_id=s.AGENT_RUN_SECURITY_GROUP_ID, vswitch_ids=list(s.AGENT_RUN_VSWITCH_IDS))
    return models.NetworkConfiguration(network_mode="PUBLIC")


def _log_config(s) -> Any:
    if bool(s.AGENT_RUN_LOG_PROJECT) != bool(s.AGENT_RUN_LOG_STORE):
        raise SettingsError("AGENT_RUN_LOG_PROJECT and AGENT_RUN_LOG_STORE go together")
    if s.AGENT_RUN_LOG_PROJECT:
        return models.LogConfiguration(project=s.AGENT_RUN_LOG_PROJECT, logstore=s.AGENT_RUN_LOG_STORE)
    return None

