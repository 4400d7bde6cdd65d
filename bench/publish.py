"""What a published port costs a Docker sandbox: ``python -m bench.publish [--starts N]``.

Starts the base image on a bridge like the fleet's (inter-container traffic off) both ways a
worker can reach its agent (``DOCKER_ACCESS_MODE``), alternating, in one run on this host:
``port`` (port 80 published on 127.0.0.1, so a ``docker-proxy`` process and NAT rules per
sandbox) and ``bridge`` (nothing published, the agent called at the container's address). For
each start: wall time of create + start and until ``/fastapi/healthz`` answers, and the CPU that
dockerd, containerd, the shims and ``docker-proxy`` took (their own and their reaped children's,
such as ``runc`` and ``iptables``: ``/proc/<pid>/stat``); then ``--calls`` healthz calls on one
connection (p50, and that CPU per call), a change of the container's CPU weight (``docker update
--cpu-shares``, what "a low weight until warm" would cost: engine CPU), and the removal (wall,
CPU). Beside them, the CPU the sandbox's own processes took until its agent answered (its cgroup's
``cpuacct.usage``, or ``cpu.stat`` on cgroup v2): what such a low weight could defer at most.
Needs Docker and the image.
"""

from __future__ import annotations

import http.client
import os
import statistics
import time

import click
import docker

from sandbox_core import polling

IMAGE = "agentscope/runtime-sandbox-base:latest"
UPDATES = 3
ENGINE = ("dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy", "runc")


def engine_cpu() -> float:
    """CPU seconds of Docker's processes so far, with the children they reaped."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in ENGINE:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def sandbox_cpu(container_id: str) -> float | None:
    """CPU seconds the container's own processes took so far (cgroup v1 or v2), None if unknown."""
    try:
        with open(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage") as f:
            return int(f.read()) / 1e9
    except OSError:
        pass
    try:
        with open(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat") as f:
            return int(f.readline().split()[1]) / 1e6  # usage_usec
    except OSError:
        return None


def _healthz(host: str, port: int, connection: http.client.HTTPConnection | None = None) -> int:
    connection = connection or http.client.HTTPConnection(host, port, timeout=2)
    connection.request("GET", "/fastapi/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def one(client: docker.DockerClient, network: str, image: str, mode: str, calls: int) -> dict:
    cpu, start = engine_cpu(), time.monotonic()
    ports = {"80/tcp": ("127.0.0.1", None)} if mode == "port" else None
    container = client.containers.create(image, network=network, ports=ports,
                                         environment={"SECRET_TOKEN": os.urandom(8).hex()})
    try:
        container.start()
        container.reload()
        settings = container.attrs["NetworkSettings"]
        if mode == "port":
            host, port = "127.0.0.1", int(settings["Ports"]["80/tcp"][0]["HostPort"])
        else:
            host, port = settings["Networks"][network]["IPAddress"], 80
        started = time.monotonic() - start

        def answers() -> bool:
            try:
                return _healthz(host, port) < 500
            except OSError:
                return False

        if not polling.poll(answers, 60, first=0.005, most=0.005):
            raise RuntimeError(f"{mode}: the agent did not answer in 60 s")
        ready, start_cpu = time.monotonic() - start, engine_cpu() - cpu
        own_cpu = sandbox_cpu(container.id)
        connection = http.client.HTTPConnection(host, port, timeout=5)
        times, cpu = [], engine_cpu()
        for _ in range(calls):
            t = time.perf_counter()
            _healthz(host, port, connection)
            times.append(time.perf_counter() - t)
        call_cpu = (engine_cpu() - cpu) / calls
        connection.close()
        cpu = engine_cpu()
        for shares in (2, 1024) * UPDATES:  # low, then back: a few, for the clock's 10 ms ticks
            client.api.update_container(container.id, cpu_shares=shares)
        update_cpu = (engine_cpu() - cpu) / (2 * UPDATES)
    finally:
        cpu, t = engine_cpu(), time.monotonic()
        container.remove(force=True)
    return {"start": started, "ready": ready, "start_cpu": start_cpu,
            "call_p50": statistics.median(times), "call_cpu": call_cpu,
            "own_cpu": own_cpu if own_cpu is not None else float("nan"), "update_cpu": update_cpu,
            "remove": time.monotonic() - t, "remove_cpu": engine_cpu() - cpu}


@click.command()
@click.option("--starts", default=10, show_default=True, help="sandboxes started per way")
@click.option("--calls", default=500, show_default=True, help="healthz calls per sandbox")
@click.option("--image", default=IMAGE, show_default=True)
def main(starts: int, calls: int, image: str) -> None:
    client = docker.from_env()
    network = f"sf-bench-publish-{os.getpid()}"
    client.networks.create(network, driver="bridge",
                           options={"com.docker.network.bridge.enable_icc": "false"})
    results: dict[str, list[dict]] = {"port": [], "bridge": []}
    try:
        for i in range(starts):
            for mode in (("port", "bridge") if i % 2 else ("bridge", "port")):
                results[mode].append(one(client, network, image, mode, calls))
    finally:
        client.networks.get(network).remove()
    rows = [("create + start, wall ms", "start"), ("until healthz answers, ms", "ready"),
            ("engine CPU per start, ms", "start_cpu"),
            ("the sandbox's own CPU until healthz, ms", "own_cpu"), ("call p50, ms", "call_p50"),
            ("engine CPU per call, ms", "call_cpu"),
            ("engine CPU per `docker update --cpu-shares`, ms", "update_cpu"),
            ("remove, wall ms", "remove"),
            ("engine CPU per remove, ms", "remove_cpu")]
    print(f"medians of {starts} starts per way, alternating\n")
    print("| figure | port | bridge | bridge / port |\n|---|---|---|---|")
    for label, key in rows:
        port, bridge = (statistics.median(r[key] for r in results[m]) * 1000
                        for m in ("port", "bridge"))
        ratio = f"{bridge / port:.2f}x" if port else "—"
        print(f"| {label} | {port:.3g} | {bridge:.3g} | {ratio} |")


if __name__ == "__main__":
    main()
