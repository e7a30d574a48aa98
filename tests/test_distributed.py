"""CPU DDP (gloo) against one process, and Hydra multiruns that run jobs side by side."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_train_config
from tinyseek.io import read_json
from tinyseek.training.run import train

# Two ranks reduce gradients in another order than one process sums them, so float32 loss
# curves drift apart by rounding only: 1e-4 nats over 12 steps leaves a wide margin (the
# observed gap is about 1e-6).
LOSS_TOLERANCE = 1e-4


def loss_curve(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "history.csv", newline="") as f:
        return {
            int(row["step"]): float(row["train/loss"])
            for row in csv.DictReader(f)
            if row["train/loss"]
        }


@pytest.mark.slow
def test_ddp_matches_single_process(tmp_path, tiny_data_dir):
    common = ("trainer.max_steps=12", "trainer.log_every_n_steps=2", "optim.warmup_steps=4")
    single = tiny_train_config(tiny_data_dir, tmp_path / "single", "data.batch_size=8", *common)
    train(single)
    ddp = tiny_train_config(
        tiny_data_dir,
        tmp_path / "ddp",
        "trainer=ddp",
        "trainer.devices=2",
        "data.batch_size=4",
        *common,
    )
    summary = train(ddp)

    assert summary["train"]["steps"] == 12
    assert summary["cost"]["devices"] == 2
    assert (
        summary["train"]["tokens"]
        == read_json(tmp_path / "single" / "train.json")["train"]["tokens"]
    )
    single_curve, ddp_curve = loss_curve(tmp_path / "single"), loss_curve(tmp_path / "ddp")
    assert list(ddp_curve) == list(single_curve) == [2, 4, 6, 8, 10, 12]
    for step, loss in single_curve.items():
        assert abs(ddp_curve[step] - loss) <= LOSS_TOLERANCE, step


def multirun(cwd: Path, env: dict[str, str], *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable,
        str(REPO / "pipelines" / "train.py"),
        "-m",
        "experiment=tiny",
        "tokenizer.vocab_size=512",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "optim.warmup_steps=2",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def wandb_run_ids(wandb_dir: Path) -> list[str]:
    return sorted(
        path.name.rsplit("-", 1)[1] for path in (wandb_dir / "wandb").glob("offline-run-*")
    )


@pytest.mark.slow
def test_ddp_under_multirun_spawns_ranks(tmp_path, tiny_data_dir):
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    process = multirun(
        tmp_path,
        env,
        f"data.dir={tiny_data_dir}",
        "trainer=ddp",
        "seed=0,1",
        f"run_dir={tmp_path}/runs/${{name}}",
    )
    finish(process)
    run_dirs = sorted((tmp_path / "runs").iterdir())
    assert [d.name for d in run_dirs] == ["mha-dense-fp32-s0", "mha-dense-fp32-s1"]
    # Two jobs, two W&B runs: a rank that re-ran the sweep would add jobs and runs.
    ids = wandb_run_ids(tmp_path)
    assert ids == sorted((d / "wandb_id.txt").read_text().strip() for d in run_dirs)
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1
    assert sorted(p.name for p in sweeps[0].iterdir() if p.is_dir()) == ["0", "1"]


@pytest.mark.slow
def test_concurrent_joblib_sweeps_stay_apart(tmp_path, tiny_data_dir):
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    # Two sweeps launched in the same second, each running its two jobs in two joblib workers.
    sweeps = [
        multirun(
            tmp_path,
            env,
            f"data.dir={tiny_data_dir}",
            "hydra/launcher=joblib",
            "seed=0,1",
            f"run_dir={tmp_path}/{name}/${{name}}",
        )
        for name in ("night_a", "night_b")
    ]
    for process in sweeps:
        finish(process)

    run_dirs = sorted(tmp_path.glob("night_*/*"))
    assert len(run_dirs) == 4
    for run_dir in run_dirs:
        assert read_json(run_dir / "train.json")["train"]["steps"] == 6
    ids = wandb_run_ids(tmp_path)
    assert len(set(ids)) == 4
    assert ids == sorted((d / "wandb_id.txt").read_text().strip() for d in run_dirs)
    assert len(list((tmp_path / "multirun").glob("*/*"))) == 2


@pytest.mark.slow
def test_same_run_dir_twice_rejected(tmp_path, tiny_data_dir):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    # Hold the lock as a running job would, then start a second job on the same folder.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "pipelines" / "train.py"),
                "experiment=tiny",
                "tokenizer.vocab_size=512",
                "logger=none",
                f"data.dir={tiny_data_dir}",
                f"run_dir={run_dir}",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    # Hydra's job logging writes the error to stdout.
    message = f"run_dir {run_dir} is in use by another training process (pid {holder.pid})"
    assert message in result.stdout + result.stderr
    assert not (run_dir / "config.yaml").exists()


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from tinyseek.training.launch import locked_run_dir
with locked_run_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(300)
"""
