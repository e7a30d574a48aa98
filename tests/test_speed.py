"""The training-loop speed work keeps behaviour: same batches, same updates, same maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.conftest import compose_config, tiny_train_config
from tinyseek.config import DataConfig, ModelConfig, OptimConfig, to_object
from tinyseek.data.datamodule import RandomWindows
from tinyseek.model.attention import attend
from tinyseek.model.loss import cross_entropy
from tinyseek.model.moe import Experts
from tinyseek.model.norm import RMSNorm
from tinyseek.model.rope import apply_rope, rope_tables
from tinyseek.training.module import LanguageModel, update_biases
from tinyseek.training.run import train
from tinyseek.training.schedule import warmup_cosine


def tiny_model_config(**fields) -> ModelConfig:
    base = {"name": "tiny", "dim": 64, "n_layers": 4, "n_heads": 4, "inter_dim": 192}
    return ModelConfig(vocab_size=96, max_seq_len=32, **(base | fields))


def test_nanogpt_preset_matches_recipe():
    cfg = to_object(
        compose_config("train", ["experiment=nanogpt_cpu", "logger=none", "model.vocab_size=66"])
    )
    assert cfg.tokenizer.type == "char"
    assert (cfg.model.n_layers, cfg.model.n_heads, cfg.model.dim) == (4, 4, 128)
    assert (cfg.data.batch_size, cfg.data.seq_len) == (12, 64)
    assert cfg.data.dir == "data/tinyshakespeare_char"
    assert cfg.trainer.max_steps == 2000
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.optim.warmup_steps == 100
    assert cfg.optim.lr * cfg.optim.min_lr_ratio == pytest.approx(1e-4)


def test_nanogpt_schedule_ends_at_min_lr():
    final = warmup_cosine(1999, warmup_steps=100, max_steps=2000, min_lr_ratio=0.1)
    assert 1e-3 * final == pytest.approx(1e-4, rel=1e-3)


def test_random_windows_match_slices():
    tokens = np.arange(1000, dtype=np.uint16)
    dataset = RandomWindows(tokens, batch_size=5, seq_len=7, seed=3, length=4)
    batch = dataset[2]
    generator = np.random.default_rng([0, 3, 2])
    offsets = generator.integers(0, len(tokens) - 8 + 1, size=5)
    expected = np.stack([tokens[o : o + 8] for o in offsets]).astype(np.int64)
    assert batch.dtype == torch.int64
    assert torch.equal(batch, torch.from_numpy(expected))


def test_negative_num_workers_rejected():
    with pytest.raises(ValueError, match="data.num_workers=-1"):
        DataConfig(num_workers=-1)


def test_rope_matches_pairwise_formula():
    cos, sin = rope_tables(16, 32, 10000.0)
    x = torch.randn(2, 32, 3, 16)
    real, imag = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    expected = torch.stack((real * c - imag * s, real * s + imag * c), dim=-1).flatten(-2)
    assert_close(apply_rope(x, cos, sin), expected)


def test_rope_keeps_bf16_dtype():
    cos, sin = rope_tables(8, 4, 10000.0)
    x = torch.randn(1, 4, 2, 8).to(torch.bfloat16)
    assert apply_rope(x, cos.to(torch.bfloat16), sin.to(torch.bfloat16)).dtype == torch.bfloat16


def test_rms_norm_matches_formula():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 16))
    x = torch.randn(3, 5, 16)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert_close(norm(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_matches_torch(dtype):
    torch.manual_seed(0)
    logits = (3 * torch.randn(4, 9, 50)).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (4, 9))
    grad = torch.tensor(0.7)

    loss = cross_entropy(logits, targets)
    (ours,) = torch.autograd.grad(loss, logits, grad)
    reference = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    (theirs,) = torch.autograd.grad(reference, logits, grad)

    assert_close(loss, reference)
    assert ours.dtype == dtype
    assert_close(ours, theirs)


def test_cross_entropy_backward_runs_once():
    logits = torch.randn(5, 7, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([0, 1, 2, 3, 6]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_cpu_attention_under_bf16_autocast_runs_in_fp32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), is_causal=True
    )
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.bfloat16())


def test_cpu_expert_gemms_stay_fp32_under_bf16_autocast():
    experts = Experts(n_experts=4, dim=16, inter_dim=8)
    torch.nn.init.normal_(experts.w1)
    x_sorted = torch.randn(10, 16).bfloat16()
    counts = torch.tensor([3, 0, 5, 2])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = experts(x_sorted, counts)

    assert out.dtype == torch.float32


def test_moe_gradients_repeat_bitwise():
    cfg = tiny_model_config(ffn="moe", moe_inter_dim=48, n_routed_experts=8, n_expert_groups=1)
    model = LanguageModel(cfg, OptimConfig(), max_steps=10, grad_clip=1.0)
    batch = torch.randint(0, 96, (4, 33), generator=torch.Generator().manual_seed(0))

    grads = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        (model.loss(batch) + model.model.aux_loss()).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])

    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_batched_bias_update_matches_per_layer():
    cfg = tiny_model_config(ffn="moe", moe_inter_dim=48, n_routed_experts=8, n_expert_groups=1)
    batched = LanguageModel(cfg, OptimConfig(), max_steps=10, grad_clip=1.0)
    looped = LanguageModel(cfg, OptimConfig(), max_steps=10, grad_clip=1.0)
    counts = torch.randint(0, 50, (len(batched.moe_layers), 8)).float()
    for _ in range(3):
        update_biases(batched.moe_layers, counts, speed=0.01)
        for moe, layer_counts in zip(looped.moe_layers, counts, strict=True):
            moe.update_bias(layer_counts, 0.01)
    for ours, reference in zip(batched.moe_layers, looped.moe_layers, strict=True):
        assert torch.equal(ours.gate.bias, reference.gate.bias)


def test_adamw_fused_on_cpu():
    module = LanguageModel(tiny_model_config(), OptimConfig(), max_steps=10, grad_clip=1.0)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True


def test_compile_keeps_parameter_names():
    cfg = tiny_model_config()
    eager = LanguageModel(cfg, OptimConfig(), max_steps=10, grad_clip=1.0)
    compiled = LanguageModel(cfg, OptimConfig(), max_steps=10, grad_clip=1.0, compile=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_moe_telemetry_only_on_log_steps(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / "run",
        "ffn=moe",
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=3",
        "optim.warmup_steps=2",
    )
    train(cfg)
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps_with_maxvio = [
        row.split(",")[0] for row in rows[1:] if row.split(",")[header.index("moe/maxvio")]
    ]
    assert steps_with_maxvio == ["3", "6"]


@pytest.mark.slow
def test_compiled_training_run(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "run", "compile=true", "trainer.max_steps=5")
    summary = train(cfg)
    assert summary["train"]["steps"] == 5
