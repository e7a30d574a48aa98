"""DeepSeekMoE: routing, grouped dispatch, balancing, exact sizing and config checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tests.conftest import compose_config, tiny_train_config
from tinyseek.config import ModelConfig, to_object
from tinyseek.model import Transformer
from tinyseek.model.ffn import SwiGLU
from tinyseek.model.moe import MoE, max_violation
from tinyseek.sizing import parameter_counts


def moe_config(**fields) -> ModelConfig:
    base = dict(
        dim=32,
        n_layers=2,
        n_heads=4,
        inter_dim=64,
        max_seq_len=64,
        vocab_size=50,
        ffn="moe",
        n_dense_layers=0,
        n_routed_experts=8,
        n_shared_experts=1,
        n_activated_experts=2,
        moe_inter_dim=16,
        n_expert_groups=1,
        n_limited_groups=1,
    )
    base.update(fields)
    return ModelConfig(**base)


def init_moe(moe: MoE, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    for param in moe.parameters():
        if param.dim() >= 2:
            torch.nn.init.normal_(param, std=0.2)
    return moe


def reference_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Loop over experts: the plain definition that the grouped dispatch must match."""
    B, T, D = x.shape
    x_flat = x.reshape(-1, D)
    weights, indices, _ = moe.gate(x_flat)
    out = torch.zeros_like(x_flat)
    experts = moe.experts
    for e in range(moe.n_experts):
        token, slot = (indices == e).nonzero(as_tuple=True)
        if len(token) == 0:
            continue
        h = F.silu(x_flat[token] @ experts.w1[e]) * (x_flat[token] @ experts.w3[e])
        out = out.index_add(0, token, (h @ experts.w2[e]) * weights[token, slot, None])
    if moe.shared_experts is not None:
        out = out + moe.shared_experts(x_flat)
    return out.view(B, T, D)


@pytest.mark.parametrize("score_func", ["sigmoid", "softmax"])
def test_single_expert_equals_dense_swiglu(score_func):
    cfg = moe_config(
        n_routed_experts=1,
        n_activated_experts=1,
        n_shared_experts=0,
        route_scale=1.0,
        score_func=score_func,
        moe_inter_dim=24,
    )
    moe = init_moe(MoE(cfg))
    dense = SwiGLU(32, 24)
    with torch.no_grad():
        dense.w1.weight.copy_(moe.experts.w1[0].T)
        dense.w3.weight.copy_(moe.experts.w3[0].T)
        dense.w2.weight.copy_(moe.experts.w2[0].T)
    x = torch.randn(2, 9, 32)
    assert_close(moe(x), dense(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("groups", [(1, 1), (4, 2)])
@pytest.mark.parametrize("shared", [0, 2])
def test_grouped_dispatch_matches_loop(groups, shared):
    cfg = moe_config(n_expert_groups=groups[0], n_limited_groups=groups[1], n_shared_experts=shared)
    moe = init_moe(MoE(cfg))
    x = torch.randn(3, 11, 32, requires_grad=True)
    upstream = torch.randn(3, 11, 32)

    out = moe(x)
    (out * upstream).sum().backward()
    grads = {name: p.grad.clone() for name, p in moe.named_parameters() if p.grad is not None}
    grad_x = x.grad.clone()
    moe.zero_grad()
    x.grad = None

    expected = reference_moe(moe, x)
    (expected * upstream).sum().backward()
    assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert_close(grad_x, x.grad, rtol=1e-5, atol=1e-5)
    for name, param in moe.named_parameters():
        if name in grads:
            assert_close(grads[name], param.grad, rtol=1e-5, atol=1e-5, msg=name)
    assert "experts.w1" in grads


def allowed_experts(biased: torch.Tensor, n_groups: int, n_limited: int) -> torch.Tensor:
    """Independent group choice: rank groups by the sum of their two best biased scores."""
    grouped = biased.view(biased.shape[0], n_groups, -1)
    group_scores = grouped.sort(dim=-1, descending=True).values[..., :2].sum(-1)
    keep = group_scores.argsort(dim=-1, descending=True)[:, :n_limited]
    allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
    return allowed.repeat_interleave(grouped.shape[-1], dim=1)  # (N, E)


@pytest.mark.parametrize("bias", [0.0, -5.0, -50.0])
def test_group_limit_never_picks_masked_expert(bias):
    cfg = moe_config(
        n_routed_experts=16, n_activated_experts=4, n_expert_groups=4, n_limited_groups=2
    )
    moe = init_moe(MoE(cfg))
    with torch.no_grad():
        moe.gate.bias.copy_(bias + torch.randn(16) * 0.1)
    x = torch.randn(200, 32)
    _, indices, scores = moe.gate(x)
    allowed = allowed_experts(scores + moe.gate.bias, 4, 2)
    assert bool(allowed.gather(1, indices).all())
    assert indices.unique(dim=1).shape == indices.shape  # no expert twice for a token


def test_sigmoid_gates_renormalised():
    cfg = moe_config(route_scale=2.5)
    moe = init_moe(MoE(cfg))
    weights, _, _ = moe.gate(torch.randn(50, 32))
    assert_close(weights.sum(dim=-1), torch.full((50,), 2.5))


def test_bias_changes_selection_not_gates():
    cfg = moe_config()
    moe = init_moe(MoE(cfg))
    x = torch.randn(40, 32)
    _, _, scores = moe.gate(x)
    with torch.no_grad():
        moe.gate.bias[3] = 100.0
    weights, indices, scores_after = moe.gate(x)
    assert bool((indices == 3).any(dim=1).all())
    assert_close(scores_after, scores)
    chosen = scores.gather(1, indices)
    assert_close(weights, chosen / chosen.sum(dim=-1, keepdim=True))


def test_bias_update_balances_skewed_router():
    cfg = moe_config(n_routed_experts=8, n_activated_experts=2)
    moe = init_moe(MoE(cfg)).train()
    with torch.no_grad():
        moe.gate.weight[0] += 1.0  # expert 0 scores high for most inputs
    torch.manual_seed(1)
    inputs = torch.randn(40, 16, 32) + 0.5

    def batch_maxvio(step: int) -> float:
        moe.train_counts.zero_()
        with torch.no_grad():
            moe(inputs[step % 40 : step % 40 + 1].expand(4, -1, -1) + 0.1 * torch.randn(4, 16, 32))
        return max_violation(moe.train_counts)

    before = sum(batch_maxvio(step) for step in range(5)) / 5
    for step in range(300):
        moe.train_counts.zero_()
        with torch.no_grad():
            moe(inputs[step % 40 : step % 40 + 1])
        moe.update_bias(moe.train_counts.clone(), speed=0.01)
    after = sum(batch_maxvio(step) for step in range(5)) / 5
    assert before > 1.0
    assert after < before / 2
    assert moe.gate.bias[0] < 0


def test_seq_aux_loss_only_when_enabled():
    x = torch.randn(2, 10, 32)
    losses = {}
    for balance in (["aux_free"], ["seq_aux"], ["aux_loss"], ["none"]):
        moe = init_moe(MoE(moe_config(balance=balance))).train()
        moe(x)
        losses[balance[0]] = moe.aux_loss.item()
    assert losses["aux_free"] == 0.0
    assert losses["none"] == 0.0
    assert losses["seq_aux"] > 0.0
    assert losses["aux_loss"] > 0.0


def test_aux_loss_has_gradient_to_router():
    moe = init_moe(MoE(moe_config(balance=["seq_aux"], seq_aux_alpha=1.0))).train()
    moe(torch.randn(2, 10, 32))
    moe.aux_loss.backward()
    assert moe.gate.weight.grad is not None
    assert float(moe.gate.weight.grad.abs().sum()) > 0


def test_counts_split_by_mode():
    moe = init_moe(MoE(moe_config()))
    moe.train()
    moe(torch.randn(2, 5, 32))
    moe.eval()
    moe(torch.randn(1, 3, 32))
    assert float(moe.train_counts.sum()) == 2 * 5 * 2
    assert float(moe.eval_counts.sum()) == 3 * 2


def test_max_violation_formula():
    assert max_violation(torch.tensor([10.0, 10.0, 10.0, 10.0])) == 0.0
    assert max_violation(torch.tensor([30.0, 10.0, 0.0, 0.0])) == pytest.approx(2.0)


def test_dense_layers_stay_dense():
    model = Transformer(moe_config(n_layers=3, n_dense_layers=1))
    assert isinstance(model.layers[0].ffn, SwiGLU)
    assert isinstance(model.layers[1].ffn, MoE)
    assert len(model.moe_layers()) == 2


def test_deepseek_v3_parameter_counts():
    cfg = to_object(compose_config("sizing", ["model=deepseek_v3_671b"])).model
    total, active = parameter_counts(cfg)
    assert total == 671_026_419_200
    assert active == 37_552_297_472


def test_small_moe_matches_dense_active_width():
    dense = to_object(compose_config("train", ["model=small", "ffn=dense"])).model
    moe = to_object(compose_config("train", ["model=small", "ffn=moe"])).model
    activated_width = (moe.n_shared_experts + moe.n_activated_experts) * moe.moe_inter_dim
    assert activated_width == dense.inter_dim
    dense.vocab_size = moe.vocab_size = 2048
    dense_total, dense_active = parameter_counts(dense)
    moe_total, moe_active = parameter_counts(moe)
    assert dense_total == dense_active
    assert moe_total > dense_total
    # The activated count exceeds the dense one only by the routers and their biases.
    routers = (moe.n_layers - moe.n_dense_layers) * (moe.dim + 1) * moe.n_routed_experts
    assert moe_active - dense_active == routers


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.n_activated_experts=20"],
            r"model.n_activated_experts=20 exceeds model.n_routed_experts=16",
        ),
        (
            ["model.n_expert_groups=3"],
            r"model.n_expert_groups=3 does not divide model.n_routed_experts=16",
        ),
        (["model.n_limited_groups=5"], r"model.n_limited_groups=5 exceeds model.n_expert_groups=4"),
        (
            ["model.n_limited_groups=1", "model.n_activated_experts=5"],
            r"leaves 4 reachable experts",
        ),
        (["model.score_func=relu"], r"model.score_func='relu' is invalid"),
        (["model.balance=[aux_free,magic]"], r"model.balance='magic' is invalid"),
        (["model.balance=[none,seq_aux]"], r"mixes none"),
        (["model.n_dense_layers=9"], r"model.n_dense_layers=9 must lie in"),
        (["model.n_routed_experts=0"], r"model.n_routed_experts=0 is invalid"),
    ],
)
def test_impossible_moe_config_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        to_object(compose_config("train", ["ffn=moe", *overrides]))


def test_moe_training_run(tmp_path, tiny_data_dir):
    from tinyseek.training.run import train

    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / "run",
        "ffn=moe",
        "trainer.max_steps=30",
        "trainer.log_every_n_steps=5",
    )
    summary = train(cfg)
    assert summary["params"]["active"] < summary["params"]["total"]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert "moe/maxvio" in history[0]
    assert "train/aux_loss" in history[0]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    bias = checkpoint["state_dict"]["model.layers.1.ffn.gate.bias"]
    assert float(bias.abs().max()) > 0


@pytest.mark.slow
def test_aux_free_beats_no_balancing(tmp_path, shakespeare_dir):
    """At the small size, loss-free balancing ends with a lower validation MaxVio than none."""
    from tinyseek.config import (
        DataConfig,
        EvalConfig,
        EvaluateConfig,
        LoggerConfig,
        TokenizerConfig,
    )
    from tinyseek.data.shards import prepare_corpus
    from tinyseek.data.sources import load_corpus
    from tinyseek.evaluation.run import evaluate
    from tinyseek.training.run import train

    data_dir = tmp_path / "data"
    corpus = load_corpus(DataConfig(), str(shakespeare_dir), tmp_path / "cache")
    prepare_corpus(corpus, TokenizerConfig(), data_dir, 0.1, 129, "tinyshakespeare")
    maxvio = {}
    for balance in ("aux_free", "none"):
        run_dir = tmp_path / balance
        cfg = to_object(
            compose_config(
                "train",
                [
                    "ffn=moe",
                    f"model.balance=[{balance}]",
                    "logger=none",
                    f"data.dir={data_dir}",
                    f"run_dir={run_dir}",
                    "trainer.max_steps=300",
                    "trainer.enable_progress_bar=false",
                ],
            )
        )
        train(cfg)
        metrics = evaluate(
            EvaluateConfig(
                run_dir=str(run_dir),
                logger=LoggerConfig(type="none"),
                eval=EvalConfig(decode_tokens=8, sample_tokens=8),
            )
        )
        maxvio[balance] = metrics["moe"]["val_maxvio"]
    assert maxvio["aux_free"] < maxvio["none"]


def test_moe_flops_count_activated_experts():
    from tinyseek.sizing import train_flops_per_token

    dense_cfg = moe_config(ffn="dense", inter_dim=48)
    moe_cfg = moe_config()  # (1 shared + 2 activated) * 16 = 48 activated width
    dense = train_flops_per_token(Transformer(dense_cfg), dense_cfg, seq_len=32)
    moe = train_flops_per_token(Transformer(moe_cfg), moe_cfg, seq_len=32)
    routers = 2 * (32 * 8 + 8)
    assert moe - dense == 6 * routers


def test_moe_same_seed_same_losses(tmp_path, tiny_data_dir):
    import csv

    from tinyseek.training.run import train

    curves = []
    for name in ("a", "b", "c"):
        cfg = tiny_train_config(
            tiny_data_dir,
            tmp_path / name,
            "ffn=moe",
            "trainer.max_steps=30",
            "trainer.log_every_n_steps=5",
        )
        train(cfg)
        with open(tmp_path / name / "history.csv", newline="") as f:
            curves.append([row["train/loss"] for row in csv.DictReader(f) if row["train/loss"]])
    assert curves[0] == curves[1]
    assert curves[0] == curves[2]
