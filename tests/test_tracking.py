"""W&B: mode resolution, and a real offline run read back with wandb's own tooling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tinyseek.config import LoggerConfig
from tinyseek.tracking import resolve_wandb_mode


def test_mode_defaults_to_offline(tmp_path):
    assert resolve_wandb_mode(LoggerConfig(), {}, tmp_path / ".netrc") == "offline"


def test_mode_online_with_api_key(tmp_path):
    assert (
        resolve_wandb_mode(LoggerConfig(), {"WANDB_API_KEY": "k"}, tmp_path / ".netrc") == "online"
    )
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert resolve_wandb_mode(LoggerConfig(), {}, netrc) == "online"


def test_mode_env_and_config_win(tmp_path):
    env = {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}
    assert resolve_wandb_mode(LoggerConfig(), env, tmp_path / ".netrc") == "disabled"
    assert resolve_wandb_mode(LoggerConfig(mode="offline"), env, tmp_path / ".netrc") == "offline"


def test_invalid_mode_rejected(tmp_path):
    with pytest.raises(ValueError, match="W&B mode 'cloud' is invalid"):
        resolve_wandb_mode(LoggerConfig(mode="cloud"), {}, tmp_path / ".netrc")


def run_stage(script: str, *overrides: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def inspect_summary(run_path: Path) -> dict:
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_offline_run_holds_config_and_metrics(tmp_path, tiny_data_dir):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    run_dir = tmp_path / "run"
    common = [f"run_dir={run_dir}"]
    trained = run_stage(
        "train.py",
        "experiment=tiny",
        "tokenizer.vocab_size=512",
        f"data.dir={tiny_data_dir}",
        "trainer.max_steps=20",
        "trainer.enable_progress_bar=false",
        "ablation=wandb_test",
        *common,
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_stage("evaluate.py", "eval.decode_tokens=8", *common, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    train_run, eval_run = (inspect_summary(path) for path in runs)

    assert train_run["name"] == "mha-dense-fp32-s0"
    assert train_run["state"] == "finished"
    assert train_run["config"]["model"]["dim"] == 64
    assert train_run["config"]["trainer"]["max_steps"] == 20
    assert "git_commit" in train_run["config"]
    assert "attention:mha" in train_run["tags"]
    assert train_run["summary"]["train/steps"] == 20

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert eval_run["summary"]["val/bpb"] == pytest.approx(metrics["val"]["bpb"])
    assert eval_run["summary"]["kv_cache/bytes_per_token"] == metrics["kv_cache"]["bytes_per_token"]
    assert eval_run["config"]["seed"] == 0
