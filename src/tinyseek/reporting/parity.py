"""FP8 loss parity: each FP8 run against its BF16 twin, read against the BF16 seed noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tinyseek.reporting.collect import Run

DEEPSEEK_BOUND = 0.0025
"""DeepSeek-V3's reported relative loss error of FP8 against BF16 (0.25 %)."""
EMA_DECAY = 0.9
"""Smoothing per logged point; with a point every 5 steps it spans about 50 steps."""


def ema(values: list[float], decay: float = EMA_DECAY) -> list[float]:
    """Bias-corrected exponential moving average, so early points are not pulled to zero."""
    smoothed, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = decay * average + (1 - decay) * value
        smoothed.append(average / (1 - decay**i))
    return smoothed


def loss_curve(run: Run) -> dict[int, float]:
    """Training loss by step from history.csv."""
    return {int(row["step"]): row["train/loss"] for row in run.history if "train/loss" in row}


def relative_error_curve(run: Run, reference: Run) -> tuple[list[int], list[float]]:
    """|EMA(loss) - EMA(reference loss)| / EMA(reference loss) on the steps both logged."""
    ours, theirs = loss_curve(run), loss_curve(reference)
    steps = sorted(set(ours) & set(theirs))
    a = ema([ours[s] for s in steps])
    b = ema([theirs[s] for s in steps])
    return steps, [abs(x - y) / y for x, y in zip(a, b, strict=True)]


def max_after(steps: list[int], errors: list[float], warmup: int) -> float | None:
    """Return the largest error after the warmup steps, or None if none was logged after."""
    after = [e for s, e in zip(steps, errors, strict=True) if s > warmup]
    return max(after) if after else None


PAIRING_AXES = ("model", "attention", "ffn", "precision", "mtp", "seed")
"""Axes that must match between twins; a run recorded before MTP existed reads as depth 0."""


def _key(run: Run, **changes: Any) -> tuple:
    axes = {"mtp": 0, **run.metrics["axes"], **changes}
    return tuple(axes.get(axis) for axis in PAIRING_AXES)


def fp8_parity(runs: list[Run]) -> list[dict[str, Any]]:
    """Build one row per FP8 run that has a BF16 twin (same variant, seed and data order).

    The noise floor is the same error between the twin and a BF16 run that differs only in
    seed; without one the floor is None.
    """
    by_key = {_key(run): run for run in runs}
    rows = []
    for run in runs:
        precision = run.metrics["axes"]["precision"]
        twin = by_key.get(_key(run, precision="bf16"))
        if not precision.startswith("fp8") or twin is None:
            continue

        warmup = _warmup_steps(run)
        steps, errors = relative_error_curve(run, twin)
        floor_run = _other_seed(twin, runs)
        floor_steps, floor_errors = relative_error_curve(floor_run, twin) if floor_run else ([], [])
        twin_val, val = twin.metrics["val"]["loss"], run.metrics["val"]["loss"]
        rows.append(
            {
                "variant": run.variant,
                "twin": twin.variant,
                "recipe": precision.removeprefix("fp8_"),
                "max_ema_rel_error": max_after(steps, errors, warmup),
                "noise_floor": max_after(floor_steps, floor_errors, warmup),
                "noise_floor_pair": f"{twin.variant} vs {floor_run.variant}" if floor_run else None,
                "final_val_rel_diff": (val - twin_val) / twin_val,
                "step_time_ratio": _tokens_per_s(twin) / _tokens_per_s(run),
                "device": run.metrics.get("cost", {}).get("device", "unknown"),
                "deepseek_bound": DEEPSEEK_BOUND,
                "curve": {"steps": steps, "errors": errors},
                "floor_curve": {"steps": floor_steps, "errors": floor_errors},
            }
        )
    return rows


def _tokens_per_s(run: Run) -> float:
    return run.metrics["throughput"]["tokens_per_s"]


def _other_seed(twin: Run, runs: list[Run]) -> Run | None:
    """Find a BF16 run identical to twin except for the seed, preferring the lowest seed."""
    candidates = [
        run
        for run in runs
        if run is not twin
        and _key(run, seed=None) == _key(twin, seed=None)
        and run.metrics["axes"]["seed"] != twin.metrics["axes"]["seed"]
    ]
    return min(candidates, key=lambda r: r.metrics["axes"]["seed"]) if candidates else None


def _warmup_steps(run: Run) -> int:
    """Read the learning-rate warmup from the run's config.yaml (0 if it has none)."""
    path = run.path / "config.yaml"
    if not path.is_file():
        return 0
    return int(OmegaConf.load(path).get("optim", {}).get("warmup_steps", 0))


def parity_figure(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """EMA relative loss error of each FP8 run against its twin, with bound and noise floor."""
    if not rows:
        return None
    from tinyseek.reporting.figures import _save, plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        curve = row["curve"]
        ax.plot(curve["steps"], [100 * e for e in curve["errors"]], label=row["variant"])
    floors = {row["noise_floor_pair"]: row["floor_curve"] for row in rows if row["noise_floor"]}
    for pair, curve in floors.items():
        errors = [100 * e for e in curve["errors"]]
        ax.plot(curve["steps"], errors, color="grey", linestyle="--", label=f"BF16 seeds: {pair}")
    ax.axhline(100 * DEEPSEEK_BOUND, color="black", linestyle=":", label="DeepSeek-V3 bound 0.25 %")
    ax.set_xlabel("step")
    ax.set_ylabel("relative loss error (%)")
    ax.set_title("FP8 vs BF16 twin: EMA-smoothed training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def parity_markdown(rows: list[dict[str, Any]]) -> str:
    """Render the parity rows as a markdown table."""
    lines = [
        "| FP8 run | BF16 twin | max EMA rel. error after warmup | BF16 seed-noise floor "
        "| final val loss diff | step time vs twin |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        floor = f"{100 * row['noise_floor']:.3f} %" if row["noise_floor"] is not None else "n/a"
        error = row["max_ema_rel_error"]
        lines.append(
            f"| {row['variant']} | {row['twin']} | "
            f"{'n/a' if error is None else f'{100 * error:.3f} %'} | {floor} | "
            f"{100 * row['final_val_rel_diff']:+.3f} % | {row['step_time_ratio']:.2f}x |"
        )
    return "\n".join(lines)
