"""Report figures, saved as PNG: loss curves with seed bands, bar charts with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinyseek.io import atomic_path  # noqa: E402
from tinyseek.reporting.collect import Run  # noqa: E402
from tinyseek.reporting.stats import CONFIDENCE  # noqa: E402
from tinyseek.reporting.table import group_by_variant  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _series(runs: list[Run], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps that every seed logged `key` at, and the values there: (steps,), (seeds, steps)."""
    per_run = [{row["step"]: row[key] for row in run.history if key in row} for run in runs]
    steps = sorted(set.intersection(*(set(series) for series in per_run)))
    if not steps:
        return None
    return np.asarray(steps), np.asarray([[series[s] for s in steps] for series in per_run])


def loss_curves(runs: list[Run], path: Path) -> Path:
    """Validation loss per variant: mean over seeds, band from the lowest to the highest seed."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant, members in group_by_variant(runs).items():
        val = _series(members, "val/loss")
        if val is None:
            continue
        steps, values = val  # values: (seeds, steps)
        (line,) = ax.plot(steps, values.mean(axis=0), marker="o", ms=3, label=variant)
        if len(members) > 1:
            ax.fill_between(
                steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2
            )
        train = _series(members, "train/loss")
        if train is not None:
            ax.plot(train[0], train[1].mean(axis=0), color=line.get_color(), alpha=0.25, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(
        "Validation loss, mean over seeds (band: min to max seed); training loss faint",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def interval_bars(rows: list[dict[str, Any]], key: str, label: str, path: Path) -> Path | None:
    """Mean per variant with its 95 % interval as an error bar and each seed as a dot."""
    shown = [row for row in rows if row["stats"].get(key)]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(shown))
    means = [row["stats"][key]["mean"] for row in shown]
    lower = [_half(row["stats"][key], "low") for row in shown]
    upper = [_half(row["stats"][key], "high") for row in shown]
    bars = ax.bar(x, means, color="#4c72b0", yerr=[lower, upper], capsize=4, ecolor="#222")
    for i, row in enumerate(shown):
        seeds = row["values"][key]
        ax.scatter(np.full(len(seeds), x[i]), seeds, color="#dd8452", s=12, zorder=3)
    labels = [f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in means]
    ax.bar_label(bars, labels=labels, fontsize=8, label_type="center", color="white")
    ax.set_xticks(x, [row["variant"] for row in shown], rotation=20, fontsize=8, ha="right")
    ax.set_ylabel(label)
    ax.set_title(
        f"{label}: mean, {CONFIDENCE:.0%} t-interval over seeds, seeds as dots", fontsize=10
    )
    ax.grid(axis="y", alpha=0.3)
    _zoom_to_data(ax, shown, key)
    return _save(fig, path)


def _half(stat: dict[str, Any], side: str) -> float:
    if stat[f"ci_{side}"] is None:
        return 0.0
    return abs(stat["mean"] - stat[f"ci_{side}"])


def _zoom_to_data(ax, rows: list[dict[str, Any]], key: str) -> None:
    """Start the y axis near the data when all values sit far from zero (losses, bpb)."""
    values = [v for row in rows for v in row["values"][key]]
    values += [row["stats"][key][b] for row in rows for b in ("ci_low", "ci_high")]
    values = [v for v in values if v is not None]
    low, high = min(values), max(values)
    if low > 0 and (high - low) < 0.5 * low:
        pad = 0.15 * (high - low) if high > low else 0.05 * low
        ax.set_ylim(low - pad, high + pad)


def expert_load_heatmap(runs: list[Run], path: Path) -> Path | None:
    """Share of routed tokens per expert and MoE layer over the validation split, first seed."""
    moe_runs = [
        members[0] for members in group_by_variant(runs).values() if "moe" in members[0].metrics
    ]
    if not moe_runs:
        return None
    fig, axes = plt.subplots(
        len(moe_runs),
        1,
        figsize=(7, 0.8 + 1.4 * len(moe_runs)),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, run in zip(axes[:, 0], moe_runs, strict=True):
        counts = np.asarray(run.metrics["moe"]["val_tokens_per_expert"], dtype=float)
        share = counts / counts.sum(axis=1, keepdims=True)  # (layers, E)
        image = ax.imshow(share, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(share)), [f"layer {i}" for i in run.metrics["moe"]["layers"]])
        ax.set_title(
            f"{run.variant}: val MaxVio {run.metrics['moe']['val_maxvio']:.3f}", fontsize=9
        )
        fig.colorbar(image, ax=ax, label="token share")
    axes[-1, 0].set_xlabel("routed expert")
    return _save(fig, path)
