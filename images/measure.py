"""Measure a built sandbox image: size, start-up, idle memory, first IPython cell.

    python3 images/measure.py [IMAGE] [--runs 10]
    python3 images/measure.py agentscope/runtime-sandbox-browser:latest --runs 3 --types-only \
        --call browser_navigate '{"url": "about:blank"}'

``--types-only`` skips the agent's own figures (start-up variants, IPython, shell) and measures a
type's MCP servers instead: the first ``list_tools`` (which starts them) and memory after it, and
after one ``--call`` (e.g. a navigation, which starts chromium). Containers run as the fleet runs
them: all capabilities dropped but those of the image's ``io.sandbox-fleet.capabilities`` label.

Needs only the standard library and the docker CLI. Every container it starts is published on
127.0.0.1 only and removed at the end. The figures in docs/images.md come from this script.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import statistics
import subprocess
import time

TOKEN = secrets.token_hex(16)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def request(port: int, method: str, path: str, body: dict | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start(image: str) -> tuple[str, int, float]:
    """``docker run -d`` until the first healthz answer: (container, port, seconds)."""
    began = time.monotonic()
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image) or "null") or {}
    caps = labels.get("io.sandbox-fleet.capabilities")
    options = ["--security-opt", "no-new-privileges"]
    if caps is not None:
        options += ["--cap-drop", "ALL", *(f"--cap-add={c}" for c in caps.split(",") if c)]
    cid = docker("run", "-d", "-p", "127.0.0.1::80", "-e", f"SECRET_TOKEN={TOKEN}", *options, image)
    port = int(docker("port", cid, "80/tcp").split()[0].rsplit(":", 1)[1])
    while True:
        try:
            if request(port, "GET", "/fastapi/healthz", timeout=1) == (200, b"OK"):
                return cid, port, time.monotonic() - began
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() - began > 60:
            raise RuntimeError(f"{image} did not answer within 60 s")
        time.sleep(0.002)


def memory(cid: str) -> dict:
    """docker stats' figure, and RSS/PSS of the container's processes read from the host's /proc."""
    stats = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", cid).split(" / ")[0]
    rss = pss = 0
    for line in docker("top", cid, "-o", "pid").splitlines()[1:]:
        pid = line.strip()
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for row in f:
                if row.startswith("Rss:"):
                    rss += int(row.split()[1])
                elif row.startswith("Pss:"):
                    pss += int(row.split()[1])
    cgroup = int(docker("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.usage_in_bytes") or 0)
    return {"docker_stats": stats, "rss_mib": rss / 1024, "pss_mib": pss / 1024, "cgroup_mib": cgroup / 2**20}


IN_CONTAINER_STARTUP = r"""
import http.client, os, subprocess, sys, time
argv = sys.argv[1:]
env = dict(os.environ, AGENT_PORT="81", SECRET_TOKEN="t")
began = time.monotonic()
proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", 81, timeout=1)
        c.request("GET", "/healthz", headers={"Authorization": "Bearer t"})
        if c.getresponse().read() == b"OK":
            break
    except OSError:
        time.sleep(0.001)
elapsed = time.monotonic() - began
with open(f"/proc/{proc.pid}/status") as f:
    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
proc.terminate(); proc.wait()
print(f"{elapsed * 1000:.1f} {rss / 1024:.1f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", nargs="?", default="agentscope/runtime-sandbox-base:latest")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--types-only", action="store_true",
                        help="measure the MCP servers instead of the agent's own figures")
    parser.add_argument("--call", nargs=2, metavar=("TOOL", "JSON"),
                        help="with --types-only: one tool call to measure after list_tools")
    args = parser.parse_args()
    image = args.image

    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    print(f"image {image}: {size / 1e6:.0f} MB ({size / 2**20:.0f} MiB)")

    times = []
    for _ in range(args.runs):
        cid, _, seconds = start(image)
        times.append(seconds)
        docker("rm", "-f", cid)
    print(f"docker run -d -> first healthz: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f} (n={len(times)})")

    cid, port, _ = start(image)
    try:
        time.sleep(3)
        idle = memory(cid)
        print("idle: docker stats {docker_stats}; RSS {rss_mib:.1f} MiB, PSS {pss_mib:.1f} MiB "
              "(all processes); cgroup usage {cgroup_mib:.1f} MiB".format(**idle))
        if args.types_only:
            measure_tools(port, cid, args.call)
            return

        for variant in (["python3", "-m", "sandbox_agent"], ["python3", "-S", "-m", "sandbox_agent"],
                        ["python3", "-X", "frozen_modules=on", "-m", "sandbox_agent"],
                        ["python3", "-S", "-X", "frozen_modules=on", "-m", "sandbox_agent"]):
            results = [docker("exec", cid, "python3", "-c", IN_CONTAINER_STARTUP, *variant).split()
                       for _ in range(args.runs)]
            ms = statistics.median(float(r[0]) for r in results)
            rss = statistics.median(float(r[1]) for r in results)
            print(f"in-container start-up of `{' '.join(variant)}` -> first healthz: median {ms:.1f} ms, "
                  f"RSS {rss:.1f} MiB")

        began = time.monotonic()
        status, body = request(port, "POST", "/fastapi/tools/run_ipython_cell", {"code": "x = 1\nx + 1"})
        first = time.monotonic() - began
        assert status == 200, body
        began = time.monotonic()
        request(port, "POST", "/fastapi/tools/run_ipython_cell", {"code": "x + 2"})
        second = time.monotonic() - began
        print(f"first IPython cell (kernel start included): {first * 1000:.0f} ms; "
              f"next cell {second * 1000:.1f} ms")
        time.sleep(1)
        after = memory(cid)
        print("after the first cell: docker stats {docker_stats}; RSS {rss_mib:.1f} MiB, "
              "PSS {pss_mib:.1f} MiB; cgroup usage {cgroup_mib:.1f} MiB".format(**after))

        began = time.monotonic()
        for _ in range(100):
            request(port, "POST", "/fastapi/tools/run_shell_command", {"command": "true"})
        per_call = (time.monotonic() - began) * 10
        print(f"run_shell_command `true`: {per_call:.1f} ms per call (new connection each)")
    finally:
        docker("rm", "-f", cid)


def measure_tools(port: int, cid: str, call: list[str] | None) -> None:
    began = time.monotonic()
    status, body = request(port, "GET", "/fastapi/mcp/list_tools")
    assert status == 200, body
    groups = {name: len(tools) for name, tools in json.loads(body).items()}
    print(f"first list_tools (starts the MCP servers): {(time.monotonic() - began) * 1000:.0f} ms, "
          f"{groups}")
    time.sleep(2)
    print("after list_tools: docker stats {docker_stats}; RSS {rss_mib:.1f} MiB, PSS {pss_mib:.1f} "
          "MiB; cgroup usage {cgroup_mib:.1f} MiB".format(**memory(cid)))
    if call:
        began = time.monotonic()
        status, body = request(port, "POST", "/fastapi/mcp/call_tool",
                               {"tool_name": call[0], "arguments": json.loads(call[1])})
        assert status == 200 and not json.loads(body).get("isError"), body
        print(f"first {call[0]}: {(time.monotonic() - began) * 1000:.0f} ms")
        time.sleep(2)
        print("after it: docker stats {docker_stats}; RSS {rss_mib:.1f} MiB, PSS {pss_mib:.1f} MiB; "
              "cgroup usage {cgroup_mib:.1f} MiB".format(**memory(cid)))


if __name__ == "__main__":
    main()
