"""Report figures: validation-loss curves and bar charts, saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tinyseek.io import atomic_path  # noqa: E402
from tinyseek.reporting.collect import Run  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curves(runs: list[Run], path: Path) -> Path:
    """Sampled validation loss (solid) and training loss (faint) against the step."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        val_steps = [r["step"] for r in run.history if "val/loss" in r]
        val_loss = [r["val/loss"] for r in run.history if "val/loss" in r]
        (line,) = ax.plot(val_steps, val_loss, marker="o", label=run.variant)

        train_steps = [r["step"] for r in run.history if "train/loss" in r]
        train_loss = [r["train/loss"] for r in run.history if "train/loss" in r]
        ax.plot(train_steps, train_loss, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Validation loss (sampled windows); training loss faint")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def expert_load_heatmap(runs: list[Run], path: Path) -> Path | None:
    """Share of routed tokens per expert and MoE layer over the validation split."""
    moe_runs = [run for run in runs if "moe" in run.metrics]
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


def bar_chart(rows: list[dict[str, Any]], key: str, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [row["variant"] for row in rows]
    values = [row[key] for row in rows]
    bars = ax.bar(names, values, color="#4c72b0")
    labels = [f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in values]
    ax.bar_label(bars, labels=labels, fontsize=8)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
