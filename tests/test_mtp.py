"""Multi-token prediction: shapes, config rules, real training and the evaluation metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_config, tiny_train_config
from tinyseek.config import (
    EvalConfig,
    EvaluateConfig,
    LoggerConfig,
    ModelConfig,
    MTPConfig,
    to_object,
)
from tinyseek.data.shards import load_meta, load_tokens
from tinyseek.evaluation.loader import load_model, load_run_config
from tinyseek.evaluation.mtp import mtp_metrics
from tinyseek.evaluation.run import evaluate
from tinyseek.model import Transformer
from tinyseek.training.run import train


def tiny_model_config(**fields) -> ModelConfig:
    base = dict(dim=64, n_layers=2, n_heads=4, inter_dim=128, max_seq_len=64, vocab_size=97)
    return ModelConfig(**(base | fields))


def mla_moe_config() -> ModelConfig:
    return tiny_model_config(
        attention="mla", ffn="moe", moe_inter_dim=48, n_expert_groups=4, n_limited_groups=2
    )


def test_mtp_logits_shapes_per_depth():
    model = Transformer(mla_moe_config(), mtp_depth=2)
    window = torch.randint(0, model.cfg.vocab_size, (2, 17))
    logits, mtp_logits = model.forward_with_mtp(window)
    assert logits.shape == (2, 16, model.cfg.vocab_size)
    assert [x.shape[1] for x in mtp_logits] == [15, 14]


def test_mtp_depth1_uses_next_embedding():
    """Changing token i + 1 changes depth 1's prediction at position i, not before it."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(), mtp_depth=1).eval()
    window = torch.randint(0, model.cfg.vocab_size, (1, 12))
    changed = window.clone()
    changed[0, 6] = (changed[0, 6] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        _, before = model.forward_with_mtp(window)
        _, after = model.forward_with_mtp(changed)
    torch.testing.assert_close(before[0][:, :5], after[0][:, :5])
    assert not torch.allclose(before[0][:, 5], after[0][:, 5])


def test_main_weights_same_with_mtp():
    torch.manual_seed(3)
    plain = Transformer(mla_moe_config())
    torch.manual_seed(3)
    with_mtp = Transformer(mla_moe_config(), mtp_depth=1)
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(with_mtp.state_dict()[name], tensor, rtol=0, atol=0)
    assert any(name.startswith("mtp.") for name in with_mtp.state_dict())


def test_mtp_moe_layers_listed_separately():
    model = Transformer(mla_moe_config(), mtp_depth=1)
    assert len(model.moe_layers()) == model.cfg.n_layers - model.cfg.n_dense_layers
    assert len(model.moe_layers(include_mtp=True)) == len(model.moe_layers()) + 1


def test_mtp_step_schedule():
    cfg = MTPConfig(depth=1, loss_weight=0.3, schedule="step", final_loss_weight=0.1)
    assert cfg.weight_at(0, 100) == 0.3
    assert cfg.weight_at(67, 100) == 0.3
    assert cfg.weight_at(68, 100) == 0.1
    assert MTPConfig(depth=1).weight_at(99, 100) == 0.3


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"depth": -1}, "mtp.depth=-1"),
        ({"schedule": "cosine"}, "mtp.schedule='cosine'"),
        ({"loss_weight": -0.1}, "mtp.loss_weight=-0.1"),
        ({"switch_fraction": 1.5}, "mtp.switch_fraction=1.5"),
    ],
)
def test_mtp_config_rejects(fields, match):
    with pytest.raises(ValueError, match=match):
        MTPConfig(**fields)


def test_mtp_group_composes():
    cfg = to_object(compose_config("train", ["mtp=depth1"]))
    assert cfg.mtp.depth == 1
    assert cfg.mtp.schedule == "step"
    assert to_object(compose_config("train")).mtp.depth == 0


def test_mtp_depth_beyond_window_rejected():
    with pytest.raises(ValueError, match="mtp.depth=8 leaves no positions"):
        to_object(compose_config("train", ["mtp.depth=8", "data.seq_len=8"]))


@pytest.fixture(scope="module")
def mtp_run(tmp_path_factory, tiny_data_dir):
    run_dir = tmp_path_factory.mktemp("mtp") / "run"
    cfg = tiny_train_config(
        tiny_data_dir, run_dir, "mtp=depth1", "trainer.max_steps=60", "trainer.log_every_n_steps=5"
    )
    train(cfg)
    return run_dir


def test_mtp_training_lowers_mtp_loss(mtp_run, tiny_data_dir):
    train_cfg = load_run_config(mtp_run)
    val = load_tokens(tiny_data_dir, "val", load_meta(tiny_data_dir))[:4000]
    torch.manual_seed(train_cfg.seed)
    untrained = Transformer(train_cfg.model, mtp_depth=1).eval()
    trained = load_model(mtp_run, train_cfg)

    before = mtp_metrics(untrained, val, 64, 8, torch.autocast("cpu", enabled=False))
    after = mtp_metrics(trained, val, 64, 8, torch.autocast("cpu", enabled=False))
    assert after["loss_depth1"] < before["loss_depth1"] - 1.0
    assert after["acceptance_rate"] > before["acceptance_rate"]


def test_mtp_metrics_match_direct_count(mtp_run, tiny_data_dir):
    model = load_model(mtp_run, load_run_config(mtp_run))
    val = load_tokens(tiny_data_dir, "val", load_meta(tiny_data_dir))[:131]
    metrics = mtp_metrics(model, val, 64, 8, torch.autocast("cpu", enabled=False))

    windows = torch.from_numpy(np.stack([val[0:65], val[64:129]]).astype(np.int64))
    with torch.no_grad():
        logits, (depth1,) = model.forward_with_mtp(windows)
    draft = depth1.argmax(-1)
    expected_rate = (draft == logits[:, 1:].argmax(-1)).float().mean().item()
    expected_loss = F.cross_entropy(depth1.flatten(0, 1), windows[:, 2:].flatten()).item()
    assert metrics["drafted_tokens"] == 2 * 63
    assert metrics["acceptance_rate"] == pytest.approx(expected_rate)
    assert metrics["loss_depth1"] == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_reports_mtp_metrics(mtp_run):
    metrics = evaluate(
        EvaluateConfig(
            run_dir=str(mtp_run),
            eval=EvalConfig(decode_tokens=8, sample_tokens=8),
            logger=LoggerConfig(type="none"),
        )
    )
    on_disk = json.loads((mtp_run / "metrics.json").read_text())
    assert on_disk["mtp"]["depth"] == 1
    assert on_disk["mtp"]["main_loss"] == metrics["val"]["loss"]
    assert 0.0 <= on_disk["mtp"]["acceptance_rate"] <= 1.0
    # Depth 1 receives the true next token, so its loss is of the main loss's size, not above it.
    assert 0 < on_disk["mtp"]["loss_depth1"] < math.log(load_run_config(mtp_run).model.vocab_size)
    assert on_disk["axes"]["mtp"] == 1
