"""The cost model: FLOPs per token, GPU-hours, dollars and implied MFU, on DeepSeek-V3."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import compose_config
from tinyseek.config import GPU_PEAK_BF16_FLOPS, CostConfig, to_object
from tinyseek.sizing import (
    cost_flops_per_token,
    device_hours_for,
    gpu_hours_for,
    implied_mfu,
)

# DeepSeek-V3's published pre-training: 14.8T tokens in 2.664M H800 GPU-hours.
V3_TOKENS = 14.8e12
V3_GPU_HOURS = 2.664e6


@pytest.fixture(scope="module")
def v3_flops():
    cfg = to_object(compose_config("sizing", ["model=deepseek_v3_671b"])).model
    return cost_flops_per_token(cfg, seq_len=4096)


def test_v3_activated_matmul_parameters(v3_flops):
    # 37.55 B activated with the embedding; the 129,280 x 7,168 input embedding is no matmul.
    assert v3_flops.matmul_params == 37_552_297_472 - 129_280 * 7_168
    assert v3_flops.matmul == 6 * v3_flops.matmul_params


def test_v3_attention_term_counts_causal_scores(v3_flops):
    # 3 * 61 layers * 128 heads * (192 qk + 128 v) * 4096 = 3.07e10, 14 % over 6 * N_active.
    assert v3_flops.attention == 3 * 61 * 128 * (192 + 128) * 4096
    assert v3_flops.attention / v3_flops.matmul == pytest.approx(0.14, abs=0.005)


def test_v3_implied_mfu(v3_flops):
    peak = GPU_PEAK_BF16_FLOPS["H800"]
    assert peak == 989e12
    mfu_6nd = implied_mfu(V3_TOKENS, v3_flops.matmul, peak, V3_GPU_HOURS)
    mfu_all = implied_mfu(V3_TOKENS, v3_flops.total, peak, V3_GPU_HOURS)
    assert mfu_6nd == pytest.approx(0.343, abs=0.001)
    assert mfu_all == pytest.approx(0.391, abs=0.001)


def test_v3_projection_round_trips(v3_flops):
    peak = GPU_PEAK_BF16_FLOPS["H800"]
    mfu = implied_mfu(V3_TOKENS, v3_flops.total, peak, V3_GPU_HOURS)
    hours = gpu_hours_for(V3_TOKENS, v3_flops.total, peak, mfu)
    assert hours == pytest.approx(2.664e6, rel=1e-9)
    assert hours * 2.0 == pytest.approx(5.328e6, rel=1e-9)


def test_projection_scales_inversely_with_mfu():
    assert gpu_hours_for(3.6e9, 1e6, 1e12, 0.5) == pytest.approx(2.0)
    assert gpu_hours_for(3.6e9, 1e6, 1e12, 0.25) == pytest.approx(4.0)


def test_device_hours_from_throughput():
    # 36,000 tokens at 10 tokens/s on 2 devices: 3,600 s wall, 2 device-hours.
    assert device_hours_for(36_000, 10.0, devices=2) == pytest.approx(2.0)


def test_invalid_cost_settings_rejected():
    with pytest.raises(ValueError, match="cost.gpu='V100' is invalid"):
        CostConfig(gpu="V100")
    with pytest.raises(ValueError, match=r"cost.mfu=1.5 must lie in \(0, 1\]"):
        CostConfig(tokens=1e9, mfu=1.5)
    with pytest.raises(ValueError, match="need cost.tokens"):
        CostConfig(gpu_hours=10.0)


def test_cost_command_prints_v3_figures():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyseek.sizing",
            "model=deepseek_v3_671b",
            "cost.tokens=14.8e12",
            "cost.gpu=H800",
            "cost.gpu_hours=2.664e6",
            "cost.price_per_hour=2",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    ).stdout
    assert "34.3 % from 6 * N_active * D alone, 39.1 % with attention" in out
    assert "2,664,000 (2.664 M) GPU-hours, $5,328,000 (5.328 M) at $2 per GPU-hour" in out
    assert "causal: seq_len / 2 keys per query on average" in out
    assert "input embedding excluded" in out
