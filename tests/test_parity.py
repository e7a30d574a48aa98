"""FP8 loss parity against BF16 twins and the BF16 seed-noise floor, on hand-made runs."""

from __future__ import annotations

import pytest

from tinyseek.reporting.collect import Run
from tinyseek.reporting.parity import ema, fp8_parity, parity_figure, parity_markdown


def _run(tmp_path, precision: str, seed: int, loss: float, val: float) -> Run:
    path = tmp_path / f"{precision}-s{seed}"
    path.mkdir()
    (path / "config.yaml").write_text("optim:\n  warmup_steps: 50\n")
    history = [{"step": float(step), "train/loss": loss} for step in range(0, 500, 5)]
    # A transient inside the warmup, which the maximum must ignore.
    history[2]["train/loss"] = loss * 2
    metrics = {
        "variant": f"mha-dense-{precision}-s{seed}",
        "axes": {"attention": "mha", "ffn": "dense", "precision": precision, "seed": seed},
        "val": {"loss": val},
        "throughput": {"tokens_per_s": 1000.0 if precision == "bf16" else 400.0},
        "cost": {"device": "cpu"},
    }
    return Run(path, metrics, history)


def test_ema_is_bias_corrected():
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert ema([0.0, 10.0], decay=0.5) == pytest.approx([0.0, 10.0 * 0.5 / 0.75])


def test_parity_rows_from_twin_and_seed_floor(tmp_path):
    runs = [
        _run(tmp_path, "bf16", 0, 4.0, 4.0),
        _run(tmp_path, "bf16", 1, 4.0 * 1.002, 4.01),
        _run(tmp_path, "fp8_blockwise", 0, 4.0 * 1.01, 3.96),
        _run(tmp_path, "fp32", 0, 3.0, 3.0),  # no FP8: not paired
    ]

    (row,) = fp8_parity(runs)

    assert row["twin"] == "mha-dense-bf16-s0"
    assert row["recipe"] == "blockwise"
    assert row["max_ema_rel_error"] == pytest.approx(0.01, rel=1e-6)
    assert row["noise_floor"] == pytest.approx(0.002, rel=1e-6)
    assert row["noise_floor_pair"] == "mha-dense-bf16-s0 vs mha-dense-bf16-s1"
    assert row["final_val_rel_diff"] == pytest.approx(-0.01)
    assert (
        "| mha-dense-fp8_blockwise-s0 | mha-dense-bf16-s0 | 1.000 % | 0.200 % | -1.000 % | 2.50x |"
        in (parity_markdown([row]))
    )
    assert parity_figure([row], tmp_path / "parity.png").stat().st_size > 0


def test_fp8_run_without_twin_is_left_out(tmp_path):
    assert fp8_parity([_run(tmp_path, "fp8_rowwise", 0, 4.0, 4.0)]) == []
    assert parity_figure([], tmp_path / "none.png") is None
