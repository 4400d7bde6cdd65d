"""``GET /metrics``: the fleet in Prometheus' text format (docs/operations.md, "Metrics").

Three sources, one page:

- this API's own series (requests, auth failures, job waits and reply timeouts), kept by
  prometheus-client in multiprocess mode so every gunicorn worker's counts add up. The directory
  is ``PROMETHEUS_MULTIPROC_DIR`` if set; else, under gunicorn, one per gunicorn master in the
  temp folder (removed by the next API start once its master is gone); outside gunicorn (one
  process) none is needed;
- the workers' series (creates, releases, calls, reaps), which workers on any host add to Redis
  (sandbox_core.metrics), so they are the whole fleet's;
- gauges read from the store at scrape time: sandboxes per host, type and state, pools, live,
  sessions, queue depths, waiting callers, live worker processes, draining hosts.
"""
# ruff: noqa: E402  (prometheus_client must be imported after PROMETHEUS_MULTIPROC_DIR is known)

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any


def _multiprocess_dir() -> str | None:
    """Where gunicorn's workers share their counts; must be known before prometheus_client loads."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if "gunicorn" not in sys.modules:
        return None
    # The workers of one gunicorn master (their parent) share one folder; those of masters that
    # are gone are removed, so restarts leave nothing behind in the temp folder.
    prefix = os.path.join(tempfile.gettempdir(), f"sandbox-fleet-metrics-{os.getuid()}-")
    for old in glob.glob(prefix + "*"):
        pid = old.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and old.removeprefix(prefix) != _process_id(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = prefix + _process_id(os.getppid())
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _process_id(pid: int) -> str:
    """``pid-starttime``: a pid the kernel reuses later names another process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f"{pid}-{f.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return f"{pid}-gone"


MULTIPROCESS_DIR = _multiprocess_dir()

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from sandbox_core import metrics as worker_metrics
from sandbox_core import states
from sandbox_core.errors import Unavailable
from sandbox_core.fleet import Fleet
from sandbox_core.registry import base_type

from .openapi import doc

bp = Blueprint("metrics", __name__)
disable_created_metrics()  # the *_created series only double the page (multiprocess mode has none)

HTTP_REQUESTS = Counter("sandbox_fleet_http_requests", "requests the API answered",
                        ("endpoint", "method", "status"))
HTTP_SECONDS = Histogram("sandbox_fleet_http_request_seconds", "time the API took to answer",
                         ("endpoint",), buckets=worker_metrics.BUCKETS)
AUTH_FAILURES = Counter("sandbox_fleet_auth_failures", "requests refused for their bearer token: "
                        "missing, invalid, or from an address blocked for too many (429)",
                        ("reason",))
JOB_WAIT = Histogram("sandbox_fleet_job_wait_seconds", "time an API process waited for a "
                     "worker's reply to a job", ("job",), buckets=worker_metrics.BUCKETS)
REPLY_TIMEOUTS = Counter("sandbox_fleet_job_reply_timeouts", "jobs no worker answered within "
                         "their timeout", ("job",))
WORKERS_LOST = Counter("sandbox_fleet_job_workers_lost", "jobs whose worker died while the API "
                       "waited (a create is sent again; this counts the ones given up)", ("job",))
_OWN = (HTTP_REQUESTS, HTTP_SECONDS, AUTH_FAILURES, JOB_WAIT, REPLY_TIMEOUTS, WORKERS_LOST)

#: Record fields the gauges and the dashboard read.
SUMMARY_FIELDS = ("state", "host", "sandbox_type", "pool_type", "session_ctx_id", "created_at",
                  "claimed_at", "last_active_at")


def init_app(app: Flask) -> None:
    """Count requests and job waits of this app, and serve /metrics."""
    if app.config["SANDBOX_SETTINGS"].FLEET_METRICS_PUBLIC:
        app.config["SANDBOX_PUBLIC_PATHS"] = (*app.config.get("SANDBOX_PUBLIC_PATHS", ()), "/metrics")
    fleet: Fleet = app.extensions["sandbox_fleet"]
    fleet.job_client.run = _timed(fleet.job_client.run)
    app.before_request(_started)
    app.after_request(_answered)
    app.register_blueprint(bp)


def _started() -> None:
    g.metrics_started = time.monotonic()


def _answered(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    if "metrics_started" in g:
        HTTP_SECONDS.labels(endpoint).observe(time.monotonic() - g.metrics_started)
    if response.status_code == 429 and "Retry-After" in response.headers:
        AUTH_FAILURES.labels("blocked").inc()
    elif response.status_code == 401:
        AUTH_FAILURES.labels("invalid" if request.headers.get("Authorization") else "missing").inc()
    return response


def _timed(run: Callable[..., Any]) -> Callable[..., Any]:
    """JobClient.run, measured: every wait, and why one ended without a reply."""

    def timed_run(name: str, kwargs: dict, timeout: float, **options: Any) -> Any:
        began = time.monotonic()
        try:
            return run(name, kwargs, timeout, **options)
        except Unavailable:
            # run() gives up early only when the worker running the job died
            waited = time.monotonic() - began
            (REPLY_TIMEOUTS if waited >= timeout - 1 else WORKERS_LOST).labels(name).inc()
            raise
        finally:
            JOB_WAIT.labels(name).observe(time.monotonic() - began)

    return timed_run


# -- the page -------------------------------------------------------------------------------

@bp.route("/metrics")
@doc(summary="Prometheus metrics of the fleet (text format)", tags=["operations"],
     description="Behind BEARER_TOKEN unless FLEET_METRICS_PUBLIC=true. Series: docs/operations.md.",
     responses={200: {"description": "Prometheus text format",
                      "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics_page() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS_DIR:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        registry.register(_OwnSeries())
    registry.register(FleetCollector(current_app.extensions["sandbox_fleet"]))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _OwnSeries:
    """This process's series when there is no multiprocess directory (one API process)."""

    def collect(self) -> Iterator:
        for metric in _OWN:
            yield from metric.collect()


def snapshot(fleet: Fleet) -> dict:
    """What the gauges and the dashboard show, read from the store in a few round trips."""
    store = fleet.store
    sandboxes = store.live_summaries(sorted(store.live_names()), SUMMARY_FIELDS)
    pools = {}
    for pooled in dict.fromkeys(base_type(t) for t in fleet.settings.DEFAULT_SANDBOX_TYPE):
        pools[pooled] = {"warm": store.pool_size(pooled), "starting": store.pool_starting(pooled),
                         "target": fleet.settings.POOL_SIZE}
    workers = [_parse_node(node) for node in store.live_workers()]
    queues = store.queue_depths()
    draining = store.draining_hosts()
    hosts = sorted({s["host"] for s in sandboxes if s.get("host")} | {w["host"] for w in workers}
                   | {q.split(".")[1] for q in queues if q.startswith("host.")} | set(draining))
    return {"sandboxes": sandboxes, "pools": pools, "workers": workers, "queues": queues,
            "draining": draining, "hosts": hosts, "sessions": len(store.session_keys()),
            "live": store.live_count(), "max_instances": fleet.settings.MAX_SANDBOX_INSTANCES,
            "waiting": store.waiting_jobs()}


def _parse_node(node: str) -> dict:
    """``lifecycle@host-1:4242`` -> role lifecycle, host host-1 (celery's -n, then our pid)."""
    name = node.rsplit(":", 1)[0]
    role, _, host = name.partition("@")
    return {"node": node, "role": role if host else "worker", "host": host or role}


class FleetCollector:
    """The fleet-wide series: the workers' (from Redis) and the store's gauges, read per scrape."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator:
        up = GaugeMetricFamily("sandbox_fleet_store_up", "1 if the state store (Redis) answered")
        try:
            view = snapshot(self.fleet)
            counts = self.fleet.store.metrics()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _gauges(view)
        yield from _worker_series(counts)


def _gauge(name: str, text: str, labels: tuple[str, ...], values: dict[tuple, float]):
    family = GaugeMetricFamily(name, text, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _gauges(view: dict) -> Iterator:
    by_state: dict[tuple, float] = defaultdict(float)
    for s in view["sandboxes"]:
        if s.get("state") in states.LIVE_STATES:
            by_state[(s.get("host") or "", s.get("sandbox_type") or "", s["state"])] += 1
    yield _gauge("sandbox_fleet_sandboxes", "live sandboxes by host, type and state (creating, "
                 "warm: pooled and unclaimed, running: claimed or created for a client)",
                 ("host", "sandbox_type", "state"), by_state)
    yield _gauge("sandbox_fleet_live_sandboxes", "sandboxes counted toward MAX_SANDBOX_INSTANCES",
                 (), {(): view["live"]})
    yield _gauge("sandbox_fleet_max_sandbox_instances", "MAX_SANDBOX_INSTANCES (0: no cap)", (),
                 {(): view["max_instances"]})
    yield _gauge("sandbox_fleet_sessions", "sessions with at least one sandbox", (),
                 {(): view["sessions"]})
    for key, text in (("warm", "warm sandboxes ready to claim"),
                      ("starting", "pool creates in flight"), ("target", "POOL_SIZE")):
        yield _gauge(f"sandbox_fleet_pool_{key}", f"{text}, per pooled type", ("pool",),
                     {(pool,): p[key] for pool, p in view["pools"].items()})
    yield _gauge("sandbox_fleet_queue_messages", "messages waiting in a Celery queue (broker "
                 "queue depth)", ("queue",), {(q,): n for q, n in view["queues"].items()})
    yield _gauge("sandbox_fleet_jobs_waiting", "API callers blocked on a job's reply right now",
                 (), {(): view["waiting"]})
    processes: dict[tuple, float] = defaultdict(float)
    for w in view["workers"]:
        processes[(w["host"], w["role"])] += 1
    yield _gauge("sandbox_fleet_worker_processes", "worker processes beating, by host and role",
                 ("host", "role"), processes)
    yield _gauge("sandbox_fleet_host_draining", "1 while a host is shutting down (no creates)",
                 ("host",), {(h,): 1 for h in view["draining"]})


def _worker_series(counts: dict[str, float]) -> Iterator:
    grouped: dict[str, dict[tuple, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for text, value in counts.items():
        try:
            series, labels = worker_metrics.parse_field(text)
        except ValueError:
            continue
        for suffix in ("_total", "_bucket", "_sum", "_count"):
            if series.endswith(suffix):
                base = series[:-len(suffix)]
                le = labels.pop("le", None)
                grouped[base][tuple(sorted(labels.items()))][suffix + (le or "")] = value
                break
    for name, (kind, text, label_names) in worker_metrics.SERIES.items():
        if kind == "counter":
            family = CounterMetricFamily(name, text, labels=list(label_names))
            for labels, values in sorted(grouped[name].items()):
                family.add_metric(_ordered(labels, label_names), values.get("_total", 0.0))
        else:
            family = HistogramMetricFamily(name, text, labels=list(label_names))
            for labels, values in sorted(grouped[name].items()):
                buckets, running = [], 0.0
                for bound in worker_metrics.BUCKETS:
                    le = worker_metrics.bound_label(bound)
                    running += values.get("_bucket" + le, 0.0)
                    buckets.append((le, running))
                family.add_metric(_ordered(labels, label_names), buckets,
                                  sum_value=values.get("_sum", 0.0))
        yield family


def _ordered(labels: tuple, names: tuple[str, ...]) -> list[str]:
    found = dict(labels)
    return [str(found.get(n, "")) for n in names]
