"""E2B's sandbox metrics, read from the sandbox's own cgroup: CPU, memory, disk, now.

cgroup v2 (``/sys/fs/cgroup/cpu.stat``, ``memory.current``...), then v1 (``cpuacct``,
``memory``), then /proc (gVisor has no cgroup files inside; there /proc is the sandbox's own).
CPU use is a rate: it is measured between the previous call and this one when that was at most
STALE seconds ago, else over WINDOW seconds now. Field names are the SDK's (``SandboxMetric``);
as envd's, ``memUsed`` leaves out the page cache, which ``memCache`` gives.
"""

from __future__ import annotations

import math
import os
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

V2, V1_CPU, V1_CPUACCT, V1_MEMORY = ("/sys/fs/cgroup", "/sys/fs/cgroup/cpu",
                                     "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/memory")
WINDOW = 0.25
STALE = 60.0
NO_LIMIT = 1 << 50  # v1 writes a huge number for "no limit"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _keyed(path: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, /proc/meminfo's ``Key: n kB``)."""
    values = {}
    for line in (_read(path) or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
    return values


def cpu_seconds() -> float:
    """CPU time the sandbox's processes used, in seconds."""
    usage = _keyed(f"{V2}/cpu.stat").get("usage_usec")
    if usage is not None:
        return usage / 1e6
    usage_ns = _read(f"{V1_CPUACCT}/cpuacct.usage")
    if usage_ns and usage_ns.isdigit():
        return int(usage_ns) / 1e9
    fields = (_read("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # all but idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_count() -> int:
    """The CPUs the sandbox may use: its quota, rounded up, else the CPUs it can run on."""
    quota = (_read(f"{V2}/cpu.max") or "").split()
    if len(quota) == 2 and quota[0].isdigit():
        return max(1, math.ceil(int(quota[0]) / int(quota[1])))
    v1_quota, v1_period = _read(f"{V1_CPU}/cpu.cfs_quota_us"), _read(f"{V1_CPU}/cpu.cfs_period_us")
    if v1_quota and v1_period and v1_quota.isdigit() and int(v1_period) > 0:
        return max(1, math.ceil(int(v1_quota) / int(v1_period)))
    return len(os.sched_getaffinity(0))


def memory() -> tuple[int, int, int]:
    """``(used, total, cache)`` in bytes."""
    meminfo = _keyed("/proc/meminfo")
    host_total = meminfo.get("MemTotal", 0)
    current, stat = _read(f"{V2}/memory.current"), _keyed(f"{V2}/memory.stat")
    limit, cache = _read(f"{V2}/memory.max"), stat.get("file", 0)
    if current is None:
        current, stat = _read(f"{V1_MEMORY}/memory.usage_in_bytes"), _keyed(f"{V1_MEMORY}/memory.stat")
        limit, cache = _read(f"{V1_MEMORY}/memory.limit_in_bytes"), stat.get("total_cache",
                                                                             stat.get("cache", 0))
    if current is None or not current.isdigit():
        total = host_total
        cache = meminfo.get("Cached", 0)
        return max(0, total - meminfo.get("MemAvailable", total)), total, cache
    total = int(limit) if limit and limit.isdigit() and int(limit) < NO_LIMIT else host_total
    return max(0, int(current) - cache), total, cache


def disk(path: str = "/") -> tuple[int, int]:
    """``(used, total)`` bytes of the sandbox's root file system."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


class Metrics:
    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None  # (monotonic, cpu seconds) of the last call
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last[0] > STALE:
                self._last = (now, cpu_seconds())
            since = now - self._last[0]
            if since < WINDOW:
                time.sleep(WINDOW - since)
            began, used_then = self._last
            now, used = time.monotonic(), cpu_seconds()
            self._last = (now, used)
        count = cpu_count()
        percent = 100 * (used - used_then) / max(now - began, 1e-6) / count
        mem_used, mem_total, mem_cache = memory()
        disk_used, disk_total = disk()
        stamp = time.time()
        return {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
                + f".{int(stamp % 1 * 1e6):06d}Z",
                "timestampUnix": int(stamp), "cpuCount": count,
                "cpuUsedPct": round(min(max(percent, 0.0), 100.0), 2),
                "memUsed": mem_used, "memTotal": mem_total, "memCache": mem_cache,
                "diskUsed": disk_used, "diskTotal": disk_total}
