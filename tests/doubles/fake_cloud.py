"""TEST-ONLY: what the fake AgentRun and Function Compute control planes share.

- ``FakeControlPlane``: a small threaded HTTP server on 127.0.0.1:<free port> that checks every
  request's ACS3-HMAC-SHA256 signature (``acs3``), answers in its service's error shape, records
  the actions it served, and fails or delays actions on demand (``fail``, ``delay``).
- ``FakeInstances``: runs a resource's sandbox image with the local Docker engine, published on
  127.0.0.1 (hardened as the fleet's Docker backend does), labelled so the tests can check that
  nothing is left.
- ``FakeDataPlane``: the URLs the services give (an endpoint's, a trigger's): a proxy on
  127.0.0.1:<free port> that forwards a resource's path to its instance, refuses calls without the
  session-affinity header the resource was configured with, and answers as the service does when
  the resource is stopped.

Never use these outside the tests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import docker
from docker.errors import DockerException, ImageNotFound

from .acs3 import Rejection, SignatureVerifier

log = logging.getLogger(__name__)

LABEL_FAKE = "io.sandbox-fleet.test.fake-cloud"
LABEL_RESOURCE = "io.sandbox-fleet.test.fake-resource"


class ServiceError(Exception):
    """An error answer of the fake service."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Injected:
    status: int
    code: str
    message: str
    times: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeControlPlane:
    """Base of a fake control plane: subclasses define ``service``, ``route`` and
    ``error_body``. Start with ``start()``; ``endpoint`` is what the SDK's ``endpoint`` takes."""

    service = "fake"

    def __init__(self, access_key_id: str, access_key_secret: str) -> None:
        self.instances = FakeInstances(self.service)
        self.data_plane = FakeDataPlane(self.instances)
        self.verifier = SignatureVerifier({access_key_id: access_key_secret})
        self.lock = threading.RLock()
        self.actions: list[str] = []  # every action served, in order (failed ones too)
        self._failures: dict[str, Injected] = {}
        self._delays: dict[str, float] = {}
        self.stopping = threading.Event()
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests read ``actions``
                pass

            def do_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                status, answer = plane.handle(self.command, self.path, headers, body)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-acs-request-id", secrets.token_hex(8))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_any

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"fake-{self.service}")

    def start(self) -> FakeControlPlane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.data_plane.stop()
        self.instances.close()

    # -- on demand -----------------------------------------------------------------------------

    def fail(self, action: str, status: int = 500, code: str = "InternalError",
             message: str = "injected failure", times: int = 1) -> None:
        """The next ``times`` calls of ``action`` answer this error (nothing is done)."""
        with self.lock:
            self._failures[action] = Injected(status, code, message, times)

    def delay(self, action: str, seconds: float) -> None:
        """Every later call of ``action`` is answered only after ``seconds``."""
        with self.lock:
            self._delays[action] = seconds

    def count(self, action: str) -> int:
        with self.lock:
            return self.actions.count(action)

    # -- serving -------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, list[str]],
               body: bytes) -> tuple[int, Any]:
        rejection = self.verifier.check(method, raw_path, headers, body)
        if rejection is not None:
            return rejection.status, self.error_body(rejection)
        action = (headers.get("x-acs-action") or ["?"])[0]
        with self.lock:
            self.actions.append(action)
            injected = self._failures.get(action)
            if injected:
                injected.times -= 1
                if injected.times <= 0:
                    del self._failures[action]
            pause = self._delays.get(action, 0)
        if pause:
            self.stopping.wait(pause)
        if injected:
            return injected.status, self.error_body(
                Rejection(injected.status, injected.code, injected.message))
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = [unquote(p) for p in parts.path.strip("/").split("/")]
        try:
            payload = json.loads(body) if body else {}
            return self.route(method, path, query, payload)
        except ServiceError as e:
            return e.status, self.error_body(Rejection(e.status, e.code, e.message))
        except (ValueError, KeyError, TypeError) as e:
            return 400, self.error_body(Rejection(400, "InvalidArgument", f"bad request: {e!r}"))

    def route(self, method: str, path: list[str], query: dict[str, str],
              body: dict) -> tuple[int, Any]:
        raise NotImplementedError

    def error_body(self, rejection: Rejection) -> dict:
        raise NotImplementedError


@dataclass
class Instance:
    """One resource's sandbox: its container (once started) and what it was made with."""

    resource: str
    image: str
    environment: dict[str, str]
    memory_mb: int
    cpus: float
    container_id: str | None = None
    port: int | None = None
    stopped: bool = False
    error: str | None = None  # why it could not start (e.g. the image is missing)
    ready: threading.Event = field(default_factory=threading.Event)


class FakeInstances:
    """Sandboxes run by the local Docker engine for one fake service."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.docker = docker.from_env(timeout=60)
        self.instances: dict[str, Instance] = {}
        self.lock = threading.Lock()

    def launch(self, instance: Instance, after: float, stopping: threading.Event,
               done: Callable[[Instance], None]) -> None:
        """Start the instance's container ``after`` seconds from now, in a thread; ``done``
        is called with it when it runs or could not start (``instance.error``)."""
        with self.lock:
            self.instances[instance.resource] = instance

        def run() -> None:
            if stopping.wait(after):
                return
            try:
                self.docker.images.get(instance.image)
            except ImageNotFound:
                instance.error = f"failed to pull image {instance.image}: not found"
            else:
                try:
                    self._run(instance)
                except DockerException as e:
                    instance.error = f"the instance could not start: {e}"
            instance.ready.set()
            with self.lock:
                live = instance.resource in self.instances
            if live:
                done(instance)
            else:  # deleted while it started
                self._remove(instance)

        threading.Thread(target=run, daemon=True, name=f"fake-{self.service}-launch").start()

    def _run(self, instance: Instance) -> None:
        container = self.docker.containers.run(
            instance.image, detach=True, name=f"fake-{self.service}_{instance.resource}",
            environment=instance.environment, ports={"80/tcp": ("127.0.0.1", None)},
            labels={LABEL_FAKE: self.service, LABEL_RESOURCE: instance.resource},
            cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"], security_opt=["no-new-privileges"],
            mem_limit=instance.memory_mb * 2 ** 20, nano_cpus=int(instance.cpus * 1e9),
            pids_limit=512)
        instance.container_id = container.id
        instance.port = self._port(container)

    def _port(self, container: Any) -> int:
        for _ in range(50):
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("80/tcp")
            if bindings:
                return int(bindings[0]["HostPort"])
            time.sleep(0.05)
        raise DockerException("the container's port 80 was not published")

    def stop(self, resource: str) -> None:
        instance = self.instances.get(resource)
        if instance and instance.container_id and not instance.stopped:
            instance.stopped = True
            self.docker.containers.get(instance.container_id).stop(timeout=1)

    def start(self, resource: str) -> None:
        instance = self.instances.get(resource)
        if instance and instance.container_id and instance.stopped:
            container = self.docker.containers.get(instance.container_id)
            container.start()
            instance.port = self._port(container)
            instance.stopped = False

    def delete(self, resource: str) -> None:
        with self.lock:
            instance = self.instances.pop(resource, None)
        if instance is not None and instance.ready.is_set():
            self._remove(instance)

    def _remove(self, instance: Instance) -> None:
        if instance.container_id:
            with contextlib.suppress(DockerException):
                self.docker.containers.get(instance.container_id).remove(force=True, v=True)

    def containers(self) -> list[Any]:
        """Every container this service's fakes made (in any process), for leak checks."""
        return self.docker.containers.list(all=True, filters={"label": f"{LABEL_FAKE}={self.service}"})

    def close(self) -> None:
        for resource in list(self.instances):
            self.delete(resource)
        self.docker.close()


@dataclass
class Route:
    """One URL prefix of the data plane: the resource it reaches and how."""

    resource: str
    affinity_header: str
    stopped_answer: tuple[int, dict]  # what the service answers while the resource is stopped


class FakeDataPlane:
    """The endpoint and trigger URLs: forwards ``<prefix>/<rest>`` to the resource's instance."""

    def __init__(self, instances: FakeInstances) -> None:
        self.instances = instances
        self.routes: dict[str, Route] = {}
        self.lock = threading.Lock()
        self.unrouted = 0  # calls that carried no session-affinity header
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = plane.forward(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_any

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="fake-data-plane").start()

    def add(self, prefix: str, route: Route) -> str:
        with self.lock:
            self.routes[prefix] = route
        return self.base + prefix

    def remove(self, prefix: str) -> None:
        with self.lock:
            self.routes.pop(prefix, None)

    def forward(self, method: str, raw_path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            match = next(((p, r) for p, r in self.routes.items()
                          if raw_path == p or raw_path.startswith(p + "/")
                          or raw_path.startswith(p + "?")), None)
        if match is None:
            return _json(404, {"code": "NotFound", "message": f"no endpoint at {raw_path}"})
        prefix, route = match
        lowered = {k.lower(): v for k, v in headers.items()}
        if not lowered.get(route.affinity_header):
            with self.lock:
                self.unrouted += 1
            return _json(400, {"code": "MissingSessionId", "message":
                               f"session-exclusive: the {route.affinity_header} header is required"})
        instance = self.instances.instances.get(route.resource)
        if instance is None or instance.port is None:
            return _json(503, {"code": "InstanceUnavailable", "message": "no instance"})
        if instance.stopped:
            return _json(*route.stopped_answer)
        rest = raw_path[len(prefix):] or "/"
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
        connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=3700)
        try:
            connection.request(method, rest if rest.startswith("/") else "/" + rest, body=body or None,
                               headers=keep)
            answer = connection.getresponse()
            data = answer.read()
            out = {k: v for k, v in answer.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding")}
            return answer.status, out, data
        except OSError as e:
            return _json(502, {"code": "InstanceError", "message": str(e)})
        finally:
            connection.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(status: int, body: dict) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def request_id() -> str:
    return f"{secrets.token_hex(4).upper()}-{secrets.token_hex(2).upper()}-{secrets.token_hex(6).upper()}"
