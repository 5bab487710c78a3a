"""PNG plots of a results document (matplotlib, Agg backend: no display needed).

- ``throughput_vs_clients.png``: median throughput (with min-max bars) per backend against
  the number of clients of the variant (one point per backend when nothing was swept);
  ``throughput_vs_ranges.png`` instead when the variants differ in their number of ranges;
- ``latency_percentiles.png``: the latency distribution per operation, per backend, from the
  HdrHistograms of every repetition merged (x: percentile on a 1/(1-p) scale);
- ``timeseries.png``: successful operations per second and mean latency over the run phases,
  every repetition drawn, with the faults marked (solid: applied, dotted: healed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a display

import matplotlib.pyplot as plt
from hdrh.histogram import HdrHistogram

from shardb.workload.pacing import Metrics

COLORS: Final = {"raft": "tab:blue", "paxos": "tab:orange"}
PERCENTILES: Final = (0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100)


def _color(backend: str) -> str:
    return COLORS.get(backend, "tab:gray")


def _ok_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if not r.get("error") and r.get("run")]


AXIS_LABELS: Final = {"clients": "closed-loop clients", "ranges": "ranges (consensus groups)"}


def swept_param(results: dict[str, Any]) -> str:
    """The variant parameter the sweep varies: ``ranges`` when the variants differ in it,
    else ``clients`` (also for a single variant)."""
    seen = {r["variant_params"].get("ranges") for r in results["runs"] if r.get("variant_params")}
    return "ranges" if len(seen) > 1 else "clients"


def throughput_vs_clients(results: dict[str, Any], path: Path, *, param: str = "clients") -> None:
    """Median throughput against ``param`` (a ``variant_params`` key)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_backend: dict[str, list[tuple[float, float, float, float]]] = {}
    for variant, backends in results["summary"].items():
        clients = next(
            (
                r["variant_params"][param]
                for r in results["runs"]
                if r["variant"] == variant and r.get("variant_params")
            ),
            None,
        )
        for backend, metrics in backends.items():
            cell = metrics.get("throughput_ops_s")
            if cell and clients is not None:
                by_backend.setdefault(backend, []).append(
                    (float(clients), cell["median"], cell["min"], cell["max"])
                )
    for backend, points in sorted(by_backend.items()):
        points.sort()
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        low = [p[1] - p[2] for p in points]
        high = [p[3] - p[1] for p in points]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=4, label=backend,
                    color=_color(backend))  # fmt: skip
    ax.set_xlabel(AXIS_LABELS.get(param, param))
    ax.set_ylabel("successful ops/s (median, min-max)")
    if len({x for pts in by_backend.values() for x, *_ in pts}) > 1:
        ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{results['scenario']['name']}: throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _merged(runs: Sequence[dict[str, Any]]) -> Metrics:
    merged = Metrics()
    for run in runs:
        merged.merge(Metrics.from_dict(run["run"]["metrics"]))
    return merged


def latency_percentiles(results: dict[str, Any], path: Path) -> None:
    runs = _ok_runs(results)
    backends = list(results["config"]["backends"])
    merged = {b: _merged([r for r in runs if r["backend"] == b]) for b in backends}
    labels = sorted({label for m in merged.values() for label in m.labels})
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(5 * max(1, len(labels)), 4.5),
                             squeeze=False)  # fmt: skip
    for ax, label in zip(axes[0], labels, strict=False):
        for backend in backends:
            stats = merged[backend].labels.get(label)
            if stats is None or stats.latency.get_total_count() == 0:
                continue
            hist: HdrHistogram = stats.latency
            xs = [1 / (1 - p / 100) if p < 100 else 1e5 for p in PERCENTILES]
            ys = [hist.get_value_at_percentile(p) / 1000 for p in PERCENTILES]
            ax.plot(xs, ys, marker=".", label=backend, color=_color(backend))
        ax.set_xscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 1e5]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0", "50", "90", "99", "99.9", "99.99", "max"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency ms")
        ax.set_yscale("log")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['scenario']['name']}: latency, all repetitions merged")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeseries(results: dict[str, Any], path: Path) -> None:
    runs = [r for r in _ok_runs(results) if r.get("timeline")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    seen: set[str] = set()
    for run in runs:
        backend = run["backend"]
        bucket_s = run["timeline"]["bucket_s"]
        # Successful ops/s over a 1 s moving window of the 100 ms buckets.
        ok = run["timeline"]["ok"]
        width = max(1, round(1 / bucket_s))
        rates = [sum(ok[max(0, i - width + 1) : i + 1]) / (width * bucket_s)
                 for i in range(len(ok))]  # fmt: skip
        xs = [(i + 1) * bucket_s for i in range(len(ok))]
        label = backend if backend not in seen else None
        seen.add(backend)
        top.plot(xs, rates, color=_color(backend), alpha=0.7, linewidth=1, label=label)
        series = run["run"]["metrics"]["series"]
        # Only seconds in which operations completed have a mean (log scale: no zeros).
        done = [s for s in series if s[1] + s[2] > 0]
        sec = [s[0] + 0.5 for s in done]
        mean_ms = [(s[4] / (s[1] + s[2])) / 1000 for s in done]
        bottom.plot(sec, mean_ms, color=_color(backend), alpha=0.7, linewidth=1)
        for event in run.get("faults", []):
            if event.get("at_ns") is not None:
                for ax in (top, bottom):
                    ax.axvline(event["at_ns"] / 1e9, color=_color(backend), linestyle="-",
                               alpha=0.4)  # fmt: skip
            if event.get("healed_ns") is not None:
                for ax in (top, bottom):
                    ax.axvline(event["healed_ns"] / 1e9, color=_color(backend), linestyle=":",
                               alpha=0.6)  # fmt: skip
    top.set_ylabel("successful ops/s (1 s window)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    if seen:
        top.legend()
    bottom.set_ylabel("mean latency ms (per s)")
    bottom.set_xlabel("seconds since the first run phase started")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3)
    fig.suptitle(
        f"{results['scenario']['name']}: every run; faults: solid = applied, dotted = healed"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Write the plots into ``out_dir``; returns their file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if not _ok_runs(results):
        return written
    param = swept_param(results)
    name = f"throughput_vs_{param}.png"
    throughput_vs_clients(results, out_dir / name, param=param)
    written.append(name)
    for name, draw in (
        ("latency_percentiles.png", latency_percentiles),
        ("timeseries.png", timeseries),
    ):
        draw(results, out_dir / name)
        written.append(name)
    return written
