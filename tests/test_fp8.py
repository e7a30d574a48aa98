"""FP8: tile and block quantisation, the blockwise GEMM and Linear, conversion, telemetry."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from tests.conftest import compose_config, tiny_train_config
from tests.test_reliability import PoisonParameter
from tinyseek.config import (
    EvalConfig,
    EvaluateConfig,
    LoggerConfig,
    ModelConfig,
    ReportConfig,
    to_object,
)
from tinyseek.evaluation.run import evaluate
from tinyseek.model import Transformer
from tinyseek.precision import (
    Float8BlockwiseLinear,
    blockwise,
    blockwise_linear,
    blockwise_mm,
    plan_fp8,
)
from tinyseek.precision.convert import convert_to_fp8, fp8_layers
from tinyseek.precision.quantise import (
    E4M3,
    E4M3_MAX,
    dequantise_tiles,
    e4m3_to_float,
    quantise_blocks,
    quantise_columns,
    quantise_tiles,
    sqnr_db,
)
from tinyseek.reporting.build import build_report
from tinyseek.training.guard import TrainingFault
from tinyseek.training.run import train


def test_tiles_have_one_scale_per_1x128_slice():
    x = torch.zeros(2, 256)
    x[0, :128] = 2.0
    x[0, 5] = -7.0  # the tile's amax comes from a negative value
    x[0, 128:] = 0.5
    x[1, 200] = 896.0  # a tile whose amax is twice the E4M3 range

    q, scale = quantise_tiles(x, 128)

    assert scale.shape == (2, 2)
    assert scale.dtype == torch.float32
    assert scale[0, 0] == pytest.approx(7.0 / E4M3_MAX)
    assert scale[0, 1] == pytest.approx(0.5 / E4M3_MAX)
    assert scale[1, 1] == pytest.approx(2.0)
    # The amax element of each tile lands exactly on +-448, keeping its sign.
    assert q[0, 5].float() == -E4M3_MAX
    assert q[1, 200].float() == E4M3_MAX
    assert q[0, 130].float() == E4M3_MAX
    # An all-zero tile gets a tiny finite scale and stays zero.
    assert 0 < scale[1, 0] < 1e-12
    assert torch.all(q[1, :128].float() == 0)
    assert torch.equal(dequantise_tiles(q, scale)[0, 128:], x[0, 128:])


def test_blocks_scale_per_block_ragged_rows():
    w = torch.ones(200, 256)
    w[:128, :128] *= 3.0
    w[130, 250] = -1000.0  # the second row of blocks holds only 72 rows
    q, scale = quantise_blocks(w, 128)

    assert scale.shape == (2, 2)
    assert torch.allclose(scale, torch.tensor([[3.0, 1.0], [1.0, 1000.0]]) / E4M3_MAX)
    assert q[130, 250].float() == -E4M3_MAX
    # Values far below their block's amax lose precision but keep their sign.
    assert q[129, 129].float() == pytest.approx(E4M3_MAX / 1000.0, rel=0.07)


def test_column_tiles_equal_row_tiles_of_the_transpose():
    torch.manual_seed(0)
    x = torch.randn(256, 96) * torch.logspace(-3, 3, 96)  # columns of very different ranges

    q, scale = quantise_columns(x, 128)  # (2, 128, 96), (2, 96)
    qt, scale_t = quantise_tiles(x.t().contiguous(), 128)  # (96, 256), (96, 2)

    assert q.shape == (2, 128, 96)
    assert torch.equal(scale, scale_t.t())
    assert torch.equal(q.view(torch.uint8).reshape(256, 96).t(), qt.view(torch.uint8))


def test_values_saturate_at_448():
    x = torch.tensor([[1e30, -1e30] + [1.0] * 126])
    q, scale = quantise_tiles(x, 128)
    assert q.float().abs().max() == E4M3_MAX
    assert torch.isfinite(q.float()).all()


def test_blockwise_gemm_sqnr_against_float64():
    torch.manual_seed(0)
    a, b = torch.randn(256, 512, dtype=torch.float64), torch.randn(512, 192, dtype=torch.float64)
    a_q, a_scale = quantise_tiles(a, 128)
    bt_q, bt_scale = quantise_tiles(b.t().contiguous(), 128)  # B's columns tiled along K

    out = blockwise_mm(a_q, a_scale, bt_q.t(), bt_scale.t(), 128)

    assert out.dtype == torch.float32
    assert sqnr_db(a @ b, out) >= 25.0


@pytest.mark.parametrize("tokens", [256, 300])  # 300 is not a multiple of the tile
def test_blockwise_linear_matches_bf16_linear(tokens):
    torch.manual_seed(0)
    x = torch.randn(tokens, 256, requires_grad=True)
    linear = nn.Linear(256, 192, bias=False)
    fp8 = Float8BlockwiseLinear.from_linear(linear, tile=128)
    grad = torch.randn(tokens, 192)

    y = fp8(x)
    y.backward(grad)
    fp8_grads = x.grad.clone(), linear.weight.grad.clone()
    x.grad, linear.weight.grad = None, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16 = linear(x)
    y_bf16.float().backward(grad)

    # Tolerance: E4M3 keeps 3 mantissa bits, so each GEMM is about 28 dB (3.6 % RMS)
    # from float64; BF16 adds under 1 %. Relative RMS differences stay below 6 %.
    def relative(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    assert relative(y, y_bf16) < 0.06
    assert relative(fp8_grads[0], x.grad) < 0.06
    assert relative(fp8_grads[1], linear.weight.grad) < 0.06
    assert fp8_grads[1].dtype == torch.float32  # FP32 master-weight gradient


def test_e4m3_to_float_exact_per_byte():
    values = torch.arange(256, dtype=torch.uint8).view(E4M3)
    finite = ~values.float().isnan()

    converted = e4m3_to_float(values)

    assert torch.equal(converted[finite], values.float()[finite])
    assert torch.equal(converted[finite].signbit(), values.float()[finite].signbit())  # -0.0


@pytest.mark.parametrize("tokens", [256, 300])
def test_emulated_gemms_match_scaled_mm(monkeypatch, tokens):
    # Without FP8 units the Linear multiplies dequantised FP32 operands. Forcing the GPU
    # path runs the per-slice torch._scaled_mm GEMMs on the same E4M3 values instead.
    torch.manual_seed(0)
    x = torch.randn(tokens, 384) * torch.logspace(-2, 2, 384)
    weight = torch.randn(192, 384)
    grad = torch.randn(tokens, 192)

    def run() -> tuple[torch.Tensor, ...]:
        x_leaf, w_leaf = x.clone().requires_grad_(), weight.clone().requires_grad_()
        y = blockwise_linear(x_leaf, w_leaf, tile=128)
        y.backward(grad)
        return y, x_leaf.grad, w_leaf.grad

    emulated = run()
    monkeypatch.setattr(blockwise, "has_fp8_units", lambda device: True)
    sliced = run()

    for a, b in zip(emulated, sliced, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_blockwise_linear_rejects_tile():
    with pytest.raises(ValueError, match="tile=96"):
        blockwise_linear(torch.randn(4, 256), torch.randn(8, 256), tile=96)


def test_emulated_gemm_keeps_nan():
    x = torch.ones(4, 128)
    x[1, 7] = float("nan")
    y = blockwise_linear(x, torch.ones(8, 128), tile=128)
    assert y[1].isnan().all()
    assert not y[[0, 2, 3]].isnan().any()


def test_blockwise_linear_keeps_leading_dims_and_autocast_dtype():
    x = torch.randn(2, 5, 64)
    w = torch.randn(32, 64)
    assert blockwise_linear(x, w, tile=32).shape == (2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert blockwise_linear(x, w, tile=32).dtype == torch.bfloat16


def _mla_moe_model() -> Transformer:
    cfg = compose_config(
        "train", ["model=small", "attention=mla", "ffn=moe", "+model.vocab_size=512"]
    )
    return Transformer(to_object(cfg).model)


def test_blockwise_conversion_swaps_exactly_the_eligible_layers():
    model = _mla_moe_model()
    plan = convert_to_fp8(model, "blockwise", tile=128)

    # small: dim 128, inter_dim 384, moe_inter_dim 96, kv_lora_rank 64.
    per_layer = ["attn.wq", "attn.wo"]
    expected = [f"layers.{i}.{name}" for i in range(4) for name in per_layer]
    expected += ["layers.0.ffn.w1", "layers.0.ffn.w2", "layers.0.ffn.w3"]
    expected += [f"layers.{i}.ffn.shared_experts.{w}" for i in (1, 2, 3) for w in ("w1", "w3")]
    assert sorted(plan.converted) == sorted(expected)
    assert sorted(fp8_layers(model)) == sorted(expected)
    assert "not a multiple of the 128-wide tile" in plan.excluded["layers.0.attn.wkv_b"]
    assert "tile" in plan.excluded["layers.1.ffn.shared_experts.w2"]
    # kv_lora_rank + qk_rope_head_dim = 72 columns: too narrow for FP8 GEMM alignment.
    assert plan.excluded["layers.2.attn.wkv_a"] == "shape 128x72 is not a multiple of 16"
    assert plan.excluded["head"] == "output head"
    assert plan.excluded["embed"] == "embedding"
    assert plan.excluded["layers.1.ffn.gate"] == "MoE router"
    assert plan.excluded["norm"] == "norm"
    assert isinstance(model.head, nn.Linear) and not isinstance(model.head, Float8BlockwiseLinear)


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_torchao_conversion_swaps_the_same_layers(recipe):
    from torchao.float8.float8_linear import Float8Linear

    model = _mla_moe_model()
    plan = convert_to_fp8(model, recipe)
    converted = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert converted == set(plan.converted)
    # torchao has no tile, so layers excluded for the tile alone are converted here.
    assert "layers.0.attn.wkv_b" in converted
    assert "head" not in converted
    assert "layers.1.ffn.gate" in plan.excluded


def test_plan_rejects_unknown_recipe():
    with pytest.raises(ValueError, match="'mxfp8' is unknown"):
        plan_fp8(Transformer(ModelConfig(vocab_size=512)), "mxfp8", 128)


def test_tile_must_divide_model_dim():
    with pytest.raises(ValueError, match=r"precision.tile=128 does not divide model.dim=64"):
        to_object(compose_config("train", ["experiment=tiny", "precision=fp8_blockwise"]))
    with pytest.raises(ValueError, match=r"precision.tile=40 is invalid"):
        to_object(compose_config("train", ["precision=fp8_blockwise", "precision.tile=40"]))


@pytest.mark.parametrize("recipe", ["fp8_blockwise", "fp8_tensorwise"])
def test_fp8_training_run_records_telemetry(tmp_path, tiny_data_dir, recipe):
    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / recipe,
        f"precision={recipe}",
        "precision.tile=32",
        "precision.telemetry_every_n_steps=5",
        "trainer.max_steps=10",
        "trainer.val_check_interval=10",
    )
    train(cfg)

    fp8 = json.loads((tmp_path / recipe / "train.json").read_text())["fp8"]
    assert fp8["recipe"] == recipe.removeprefix("fp8_")
    assert fp8["telemetry_samples"] == 2  # steps 0 and 5
    for gemm in ("fwd", "dgrad", "wgrad"):
        assert 15.0 < fp8[f"sqnr_{gemm}_db_worst"] < 60.0
    assert fp8["overflow_input_worst"] == 0.0
    assert 0.0 <= fp8["underflow_grad_worst"] < 0.05
    assert fp8["amax_weight_worst"] > 0


def test_report_pairs_fp8_run_with_bf16_twin(tmp_path, tiny_data_dir):
    for precision, seed in [("bf16", 0), ("bf16", 1), ("fp8_blockwise", 0)]:
        run_dir = tmp_path / "runs" / f"{precision}-{seed}"
        cfg = tiny_train_config(
            tiny_data_dir,
            run_dir,
            f"precision={precision}",
            "precision.tile=32",
            f"seed={seed}",
            "trainer.max_steps=20",
            "trainer.val_check_interval=20",
            "trainer.log_every_n_steps=2",
            "trainer.limit_val_batches=2",
            "optim.warmup_steps=4",
        )
        train(cfg)
        evaluate(
            EvaluateConfig(
                run_dir=str(run_dir),
                eval=EvalConfig(decode_tokens=4, prompt_tokens=8, sample_tokens=8),
                logger=LoggerConfig(type="none"),
            )
        )

    summary = build_report(
        ReportConfig(
            runs=[str(tmp_path / "runs")],
            out=str(tmp_path / "report"),
            logger=LoggerConfig(type="none"),
        )
    )

    (row,) = summary["fp8_parity"]
    assert row["variant"] == "mha-dense-fp8_blockwise-s0"
    assert row["twin"] == "mha-dense-bf16-s0"
    assert row["noise_floor_pair"] == "mha-dense-bf16-s0 vs mha-dense-bf16-s1"
    assert 0 < row["max_ema_rel_error"] < 0.2
    assert 0 < row["noise_floor"] < 0.2
    markdown = (tmp_path / "report" / "ablation.md").read_text()
    assert "## FP8 loss parity" in markdown
    assert "no FP8 units" in markdown
    assert (tmp_path / "report" / "figures" / "fp8_parity.png").stat().st_size > 0


def test_guard_stops_fp8_run_on_nan_weight(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(
        tiny_data_dir,
        run_dir,
        "precision=fp8_blockwise",
        "precision.tile=32",
        "trainer.max_steps=12",
        "trainer.checkpoint_every_n_steps=5",
        "trainer.val_check_interval=12",
    )
    # A NaN in an FP8 layer's weight makes its block scale NaN, and the loss with it.
    poison = PoisonParameter("layers.0.attn.wq.weight", float("nan"), step=7)

    with pytest.raises(TrainingFault, match="non-finite loss \\(nan\\) at step 7"):
        train(cfg, extra_callbacks=(poison,))

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 5
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())
