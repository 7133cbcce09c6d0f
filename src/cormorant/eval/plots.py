"""The report's figures, drawn with matplotlib into PNG bytes (no display needed)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from cormorant.eval.harness import EvalResult


def _figure(width: float = 6.4, height: float = 3.6, panels: int = 1) -> tuple[Any, Any]:
    """A figure with one axes, or a row of ``panels`` axes sharing y when ``panels`` > 1."""
    import matplotlib

    matplotlib.use("Agg")  # headless: reports are built on servers and in CI
    import matplotlib.pyplot as plt

    if panels == 1:
        return plt.subplots(figsize=(width, height), dpi=110)
    fig, axes = plt.subplots(1, panels, figsize=(width, height), dpi=110, sharey=True,
                             squeeze=False)
    return fig, list(axes[0])


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def color(system: str) -> str:
    """A system's colour, the same in every figure and every report: picked by a hash of its
    name, not by its position in one plot.

    Example:
        >>> color("bm25") == color("bm25")
        True
    """
    import zlib

    return PALETTE[zlib.crc32(system.encode()) % len(PALETTE)]


def recall_curves(dataset: str, curves: dict[str, dict[int, float]]) -> bytes:
    """Recall@k against k (log scale), one line per pipeline."""
    fig, ax = _figure()
    for pipeline, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", markersize=3, label=pipeline,
                color=color(pipeline))
    ax.set_xscale("log")
    ax.set_xlabel("k (results per query)")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1)
    ax.set_title(f"{dataset}: recall at depth k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def quality_vs_latency(dataset: str, results: list[EvalResult], measure: str) -> bytes:
    """Each pipeline's quality against its search time per query."""
    fig, ax = _figure()
    spread = all("latency_ms_p50" in r.timing for r in results)
    for r in results:
        y = r.metrics[measure]
        if spread:  # median of one-query timings, bars from the 10th to the 90th percentile
            mid = max(r.timing["latency_ms_p50"], 1e-3)
            low, high = mid - r.timing["latency_ms_p10"], r.timing["latency_ms_p90"] - mid
            ax.errorbar(mid, y, xerr=[[max(low, 0.0)], [max(high, 0.0)]], fmt="o", ms=6,
                        capsize=3, color=color(r.pipeline))
        else:  # results cached before one-query timings were kept
            mid = max(r.timing.get("ms_per_query", 0.0), 1e-3)
            ax.scatter(mid, y, s=40, color=color(r.pipeline))
        ax.annotate(r.pipeline, (mid, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels collide on short spans
    ax.set_xlabel("one-query latency (ms, log scale; median, bars 10th-90th percentile)"
                  if spread else "search time per query (ms, log scale; batch of all queries)")
    ax.set_ylabel(measure)
    ax.set_title(f"{dataset}: {measure} against query latency")
    ax.grid(alpha=0.3)
    return _png(fig)


def per_query_differences(dataset: str, baseline: EvalResult, others: list[EvalResult],
                          measure: str) -> bytes:
    """Per-query difference to the baseline, sorted, one panel per system."""
    n = max(len(others), 1)
    fig, axes = _figure(width=min(4.0 * n, 14), height=3.2, panels=n)
    axes = axes if n > 1 else [axes]
    queries = sorted(baseline.per_query)
    for ax, other in zip(axes, others, strict=False):
        diff = np.sort([other.per_query[q][measure] - baseline.per_query[q][measure]
                        for q in queries])[::-1]
        colors = np.where(diff > 0, "tab:green", np.where(diff < 0, "tab:red", "tab:gray"))
        ax.bar(np.arange(len(diff)), diff, width=1.0, color=colors)
        ax.axhline(0, color="black", linewidth=0.6)
        wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
        ax.set_title(f"{other.pipeline}\n{wins} better, {losses} worse", fontsize=9)
        ax.set_xlabel("queries (sorted)")
        ax.set_xticks([])
    axes[0].set_ylabel(f"Δ {measure} vs {baseline.pipeline}")
    fig.suptitle(f"{dataset}: per-query {measure} difference", fontsize=10)
    return _png(fig)


def regimes(dataset: str, systems: dict[str, dict[str, dict[str, float]]], measure: str) -> bytes:
    """Interpolation against extrapolation quality per system."""
    fig, ax = _figure()
    names = list(systems)
    x = np.arange(len(names))
    interp = [systems[s][measure]["interpolation"] for s in names]
    extrap = [systems[s][measure]["extrapolation"] for s in names]
    ax.bar(x - 0.2, interp, width=0.4, label="interpolation")
    ax.bar(x + 0.2, extrap, width=0.4, label="extrapolation")
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.set_ylabel(measure)
    ax.set_title(f"{dataset}: interpolation vs extrapolation")
    ax.legend(fontsize=8)
    return _png(fig)


def regime_gap(dataset: str, systems: dict[str, dict[str, dict[str, float]]], measure: str) -> bytes:
    """Each system's gap on ``measure``: interpolation minus extrapolation (above 0: worse on
    queries unlike the training queries)."""
    fig, ax = _figure()
    names = list(systems)
    gaps = [systems[n][measure]["gap"] for n in names]
    ax.bar(np.arange(len(names)), gaps, color=[color(n) for n in names])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{measure} gap (interp - extrap)")
    ax.set_title(f"{dataset}: extrapolation gap")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
