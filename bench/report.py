"""The Markdown table of a side-by-side run (bench/sidebyside.py): each figure for both servers
(the median over rounds, with the range when there were several) and the ratio fleet/upstream."""

from __future__ import annotations

import statistics
from typing import Any

# (label, path into one server's round result, unit)
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("churn: acquire (claim + `echo hi`) p50", ("churn", "acquire", "p50_ms"), "ms"),
    ("churn: acquire p99", ("churn", "acquire", "p99_ms"), "ms"),
    ("churn: call p50", ("churn", "call", "p50_ms"), "ms"),
    ("churn: call p99", ("churn", "call", "p99_ms"), "ms"),
    ("churn: release answered p50", ("churn", "release", "p50_ms"), "ms"),
    ("churn: release answered p99", ("churn", "release", "p99_ms"), "ms"),
    ("churn: failed sessions", ("churn", "failures"), ""),
    ("concurrent: calls/s (higher is better)", ("concurrent", "calls_per_s"), "/s"),
    ("concurrent: call p50", ("concurrent", "call", "p50_ms"), "ms"),
    ("burst past the pool: all served (— when some failed)", ("burst", "all_served_s"), "s"),
    ("burst: sessions served", ("burst", "served"), ""),
    ("burst: failed sessions", ("burst", "failures"), ""),
    ("cold create to first result p50", ("cold", "create_to_first_result", "p50_ms"), "ms"),
    ("cold: release answered p50", ("cold", "release", "p50_ms"), "ms"),
    ("quiet window: call via the server p50", ("quiet", "via_server", "p50_ms"), "ms"),
    ("quiet window: straight to the agent p50", ("quiet", "direct_to_agent", "p50_ms"), "ms"),
    ("quiet window: what the server adds p50", ("quiet", "overhead_p50_ms"), "ms"),
    ("idle memory per sandbox (mean)", ("idle_memory", "mean_mib"), "MiB"),
    ("start to a pool that answers", ("pool_ready_after_start_s",), "s"),
    ("containers left after stop", ("leftover_containers",), ""),
]


def dig(result: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def _human(value: float, unit: str) -> str:
    """Three significant figures; milliseconds of a second or more are shown in seconds."""
    if unit == "ms" and value >= 1000:
        value, unit = value / 1000, "s"
    return f"{value:.3g} {unit}".strip()


def _fmt(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    text = _human(statistics.median(values), unit)
    low, high = _human(min(values), unit), _human(max(values), unit)
    if low != high:
        text += f" ({low} - {high})"
    return text


def markdown(results: dict, columns: tuple[str, str] = ("upstream", "fleet"),
             headers: tuple[str, str, str] = ("upstream", "sandbox-fleet", "fleet / upstream")) -> str:
    """One row per figure: both columns and their ratio (second / first)."""
    rounds = results["rounds"]
    sizes = results["sizes"]
    first, second = columns
    lines = [f"POOL_SIZE={sizes['pool']}, {len(rounds)} round(s); median over rounds (range)", "",
             "| figure | {} | {} | {} |".format(*headers),
             "|---|---|---|---|"]
    for label, path, unit in ROWS:
        a, b = ([v for r in rounds if kind in r for v in [dig(r[kind], path)]
                 if isinstance(v, int | float)] for kind in columns)
        ratio = "—"
        if a and b and statistics.median(a):
            ratio = f"{statistics.median(b) / statistics.median(a):.2f}x"
        lines.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {ratio} |")
    return "\n".join(lines)


def cpu_markdown(results: dict, columns: tuple[str, ...], workload: str = "churn") -> str:
    """CPU milliseconds per churn session (``workload="churn"``) or per call of the concurrent
    sessions (``"concurrent"``), by part, from the ``cpu_s`` the workload's result carries: the
    median over rounds of each column."""
    unit = "session" if workload == "churn" else "call"
    per: dict[str, dict[str, list[float]]] = {kind: {} for kind in columns}
    for entry in results["rounds"]:
        for kind in columns:
            done = dig(entry.get(kind, {}), (workload,)) or {}
            # per call answered (a loop that failed stops early), per session that arrived
            count = done.get("sessions") if workload == "churn" else dig(done, ("call", "n"))
            for part, seconds in (done.get("cpu_s") or {}).items():
                per[kind].setdefault(part, []).append(1000 * seconds / max(1, count or 1))
    parts = sorted({p for kind in columns for p in per[kind]},
                   key=lambda p: -max(statistics.median(per[k].get(p) or [0]) for k in columns))
    lines = [f"CPU ms per {workload} {unit}, by part (median over rounds)", "",
             "| part | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for part in parts:
        cells = [f"{statistics.median(per[k][part]):.1f}" if per[k].get(part) else "—"
                 for k in columns]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
