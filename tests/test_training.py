"""Real Lightning training at the tiny size: loss goes down, seeds reproduce, outputs land."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.conftest import tiny_train_config
from tinyseek.config import EvalConfig, EvaluateConfig, LoggerConfig
from tinyseek.evaluation.run import evaluate
from tinyseek.training.run import train
from tinyseek.training.schedule import warmup_cosine


def read_history(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def losses(run_dir) -> list[float]:
    return [
        float(row["train/loss"])
        for row in read_history(run_dir / "history.csv")
        if row["train/loss"]
    ]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_data_dir):
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    cfg = tiny_train_config(
        tiny_data_dir, run_dir, "trainer.max_steps=60", "trainer.log_every_n_steps=5"
    )
    summary = train(cfg)
    return run_dir, summary


def test_training_lowers_loss(trained_run):
    run_dir, _ = trained_run
    curve = losses(run_dir)
    assert len(curve) == 12
    # Uniform guessing over the 512-token vocabulary costs ln(512) = 6.24 nats.
    assert curve[0] > 5.5
    assert curve[-1] < curve[0] - 1.0


def test_training_writes_outputs(trained_run):
    run_dir, summary = trained_run
    for name in ("config.yaml", "history.csv", "train.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    assert summary["train"]["steps"] == 60
    assert summary["train"]["tokens"] == 60 * 8 * 64
    assert summary["throughput"]["tokens_per_s"] > 0
    assert summary["memory"]["peak_bytes"] > 0


def test_history_holds_metric_names(trained_run):
    run_dir, _ = trained_run
    columns = set(read_history(run_dir / "history.csv")[0])
    expected = {
        "step",
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "throughput/tokens_per_s",
        "memory/peak_bytes",
        "val/loss",
    }
    assert expected <= columns


def test_same_seed_same_losses(tmp_path, tiny_data_dir):
    curves = []
    for name in ("a", "b"):
        cfg = tiny_train_config(
            tiny_data_dir, tmp_path / name, "trainer.max_steps=20", "trainer.log_every_n_steps=5"
        )
        train(cfg)
        curves.append(losses(tmp_path / name))
    assert curves[0] == curves[1]


def test_different_seed_different_losses(tmp_path, tiny_data_dir, trained_run):
    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / "s1",
        "seed=1",
        "trainer.max_steps=20",
        "trainer.log_every_n_steps=5",
    )
    train(cfg)
    assert losses(tmp_path / "s1")[:4] != losses(trained_run[0])[:4]


def test_evaluate_writes_metrics(trained_run):
    run_dir, _ = trained_run
    metrics = evaluate(
        EvaluateConfig(
            run_dir=str(run_dir),
            eval=EvalConfig(decode_tokens=16),
            logger=LoggerConfig(type="none"),
        )
    )
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert 0 < metrics["val"]["bpb"] < 8
    assert metrics["val"]["bpb"] == pytest.approx(
        metrics["val"]["loss"] * metrics["val"]["tokens"] / math.log(2) / metrics["val"]["bytes"]
    )
    assert metrics["kv_cache"]["bytes_per_token_measured"] == metrics["kv_cache"]["bytes_per_token"]
    assert metrics["throughput"]["decode_tokens_per_s"] > 0
    assert isinstance(metrics["sample"], str) and metrics["sample"]


def test_resume_with_other_config_rejected(trained_run, tiny_data_dir):
    run_dir, _ = trained_run
    cfg = tiny_train_config(tiny_data_dir, run_dir, "trainer.max_steps=60", "optim.lr=0.01")
    with pytest.raises(ValueError, match="contains a checkpoint of a different configuration"):
        train(cfg)


def test_finished_run_left_alone(trained_run, tiny_data_dir):
    run_dir, summary = trained_run
    before = (run_dir / "train.json").read_text()
    cfg = tiny_train_config(
        tiny_data_dir, run_dir, "trainer.max_steps=60", "trainer.log_every_n_steps=5"
    )
    assert train(cfg) == summary
    assert (run_dir / "train.json").read_text() == before


def test_batch_larger_than_data_rejected(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "run", "data.batch_size=100000")
    with pytest.raises(ValueError, match="data.batch_size=100000 x data.seq_len=64"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_tokenizer_mismatch_rejected(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "run", "tokenizer=char")
    with pytest.raises(
        ValueError,
        match=r"prepared with tokenizer bpe \(vocab_size 512\), but the config asks for char:",
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_window_longer_than_data_rejected(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / "run",
        "data.seq_len=120",
        "model.max_seq_len=100000",
        "data.batch_size=1",
    )
    # 120 tokens fit; a window past the validation split's length does not.
    cfg.data.seq_len = 100_000
    with pytest.raises(ValueError, match="fewer than one window"):
        train(cfg)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
