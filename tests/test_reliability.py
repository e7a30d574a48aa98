"""Faults a long sweep meets: kills, bad input, NaN/Inf, a full disk, spikes, lost checkpoints."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from hydra.errors import ConfigCompositionException, MissingConfigException

from tests.conftest import REPO, compose_config, tiny_train_config
from tinyseek.config import to_object
from tinyseek.data.shards import token_dtype
from tinyseek.data.sources import CorpusError, read_text_file
from tinyseek.io import read_json, write_json
from tinyseek.runtime import wandb_dir_outside_dvc_workspace
from tinyseek.training import checkpoint as checkpoint_module
from tinyseek.training import run as run_module
from tinyseek.training.checkpoint import CheckpointError
from tinyseek.training.guard import TrainingFault
from tinyseek.training.launch import RunDirBusy, locked_run_dir
from tinyseek.training.run import train

# Columns of history.csv that depend on the clock or the process, not on the numbers.
TIMING_COLUMNS = ("throughput/tokens_per_s", "memory/peak_bytes")


def read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in TIMING_COLUMNS:
            row.pop(column, None)
    return rows


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def guarded_config(data_dir: Path, run_dir: Path, *overrides: str):
    return tiny_train_config(
        data_dir,
        run_dir,
        "trainer.max_steps=30",
        "trainer.checkpoint_every_n_steps=5",
        "trainer.val_check_interval=30",
        *overrides,
    )


class PoisonParameter(L.Callback):
    """Multiplies one parameter by a factor (NaN, or a large number) before a given step."""

    def __init__(self, name: str, factor: float, step: int):
        self.name, self.factor, self.step = name, factor, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                dict(pl_module.model.named_parameters())[self.name].mul_(self.factor)


class PoisonGradient(L.Callback):
    """Makes one parameter's gradient NaN at the given steps, leaving the loss finite."""

    def __init__(self, name: str, steps: set[int]):
        self.name, self.steps = name, steps
        self.handle = None

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if trainer.global_step in self.steps:
            parameter = dict(pl_module.model.named_parameters())[self.name]
            self.handle = parameter.register_hook(lambda g: torch.full_like(g, float("nan")))

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


# Numerical guard


def test_guard_stops_on_nan_loss(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    cfg = guarded_config(tiny_data_dir, run_dir)
    poison = PoisonParameter("head.weight", float("nan"), step=12)
    with pytest.raises(TrainingFault) as caught:
        train(cfg, extra_callbacks=(poison,))
    message = str(caught.value)
    assert "non-finite loss (nan) at step 12" in message
    assert (
        f"The last good checkpoint, {run_dir / 'checkpoints' / 'last.ckpt'} at step 10" in message
    )
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 10
    assert not (run_dir / "train.json").exists()


def test_guard_names_nonfinite_gradient(tmp_path, tiny_data_dir):
    cfg = guarded_config(tiny_data_dir, tmp_path / "run")
    poison = PoisonGradient("layers.1.attn.wk.weight", steps={7})
    with pytest.raises(
        TrainingFault, match=r"non-finite gradient of model\.layers\.1\.attn\.wk\.weight at step 7"
    ):
        train(cfg, extra_callbacks=(poison,))
    assert checkpoint_step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 5


def test_guard_skips_and_counts_steps(tmp_path, tiny_data_dir):
    cfg = guarded_config(tiny_data_dir, tmp_path / "run", "guard.skip_nonfinite=true")
    poison = PoisonGradient("layers.0.ffn.w1.weight", steps={4, 9})
    summary = train(cfg, extra_callbacks=(poison,))
    assert summary["guard"]["skipped_steps"] == 2
    assert summary["train"]["steps"] == 30
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def test_guard_skip_limit_stops_run(tmp_path, tiny_data_dir):
    cfg = guarded_config(
        tiny_data_dir, tmp_path / "run", "guard.skip_nonfinite=true", "guard.max_skipped_steps=1"
    )
    poison = PoisonGradient("embed.weight", steps={3, 6})
    with pytest.raises(TrainingFault, match="2 steps had non-finite values, more than"):
        train(cfg, extra_callbacks=(poison,))


def test_guard_stops_on_loss_spike(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    cfg = guarded_config(tiny_data_dir, run_dir, "guard.spike_window=5", "guard.spike_factor=3")
    poison = PoisonParameter("head.weight", 200.0, step=17)
    with pytest.raises(TrainingFault) as caught:
        train(cfg, extra_callbacks=(poison,))
    message = str(caught.value)
    assert "loss spike at step 17:" in message
    assert "guard.spike_factor=3 times the mean" in message
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 15


def test_guard_spike_factor_rejected():
    with pytest.raises(ValueError, match="guard.spike_factor=0.5 is invalid"):
        to_object(compose_config("train", ["guard.spike_factor=0.5"]))


# Checkpoints


def test_checkpoint_write_failure_reported(tmp_path, tiny_data_dir, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = guarded_config(tiny_data_dir, run_dir)
    real_save = torch.save
    calls = []

    def save_until_disk_full(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 2:
            # Write part of the file first, as a real full disk does.
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_until_disk_full)
    with pytest.raises(TrainingFault) as caught:
        train(cfg)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    message = str(caught.value)
    assert f"writing checkpoint {checkpoint} failed at step 10" in message
    assert "No space left on device" in message
    assert "The previous checkpoint at that path is unchanged" in message
    assert checkpoint_step(checkpoint) == 5
    assert list(checkpoint.parent.iterdir()) == [checkpoint]


def test_truncated_checkpoint_reported(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    cfg = guarded_config(tiny_data_dir, run_dir, "trainer.max_steps=10")
    train(cfg)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    (run_dir / "train.json").unlink()
    config_before = (run_dir / "config.yaml").read_text()

    cfg = guarded_config(tiny_data_dir, run_dir, "trainer.max_steps=10")
    with pytest.raises(CheckpointError, match=f"checkpoint {checkpoint} is corrupt or truncated"):
        train(cfg)
    assert (run_dir / "config.yaml").read_text() == config_before


def test_checkpoint_without_state_reported(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, checkpoint)
    cfg = guarded_config(tiny_data_dir, run_dir)
    with pytest.raises(CheckpointError, match="lacks optimizer_states, lr_schedulers, loops"):
        train(cfg)


# Resume after SIGKILL, and determinism across processes


def train_command(data_dir: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "pipelines" / "train.py"),
        "experiment=tiny",
        "tokenizer.vocab_size=512",
        f"data.dir={data_dir}",
        f"run_dir={run_dir}",
        "trainer.max_steps=60",
        "trainer.checkpoint_every_n_steps=5",
        "trainer.log_every_n_steps=5",
        "trainer.val_check_interval=20",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }


def run_to_end(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def kill_after_checkpoint(command: list[str], env: dict[str, str], run_dir: Path, step: int) -> int:
    """Start training, SIGKILL it once a checkpoint of at least `step` exists; return that step."""
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoint.is_file() and checkpoint_step(checkpoint) >= step:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return checkpoint_step(checkpoint)
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    pytest.fail(f"training ended (status {process.returncode}) before a checkpoint of step {step}")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_data_dir):
    """An uninterrupted 60-step run in its own process, logged to offline W&B."""
    root = tmp_path_factory.mktemp("reference")
    run_dir = root / "run"
    run_to_end(train_command(tiny_data_dir, run_dir), subprocess_env(root))
    return root, run_dir


def test_kill_and_resume_match_uninterrupted(tmp_path, tiny_data_dir, reference_run):
    _, reference_dir = reference_run
    run_dir = tmp_path / "run"
    env = subprocess_env(tmp_path)
    command = train_command(tiny_data_dir, run_dir)
    killed_at = kill_after_checkpoint(command, env, run_dir, step=10)
    assert 10 <= killed_at < 60
    assert not (run_dir / "train.json").exists()

    run_to_end(command, env)
    assert read_history(run_dir / "history.csv") == read_history(reference_dir / "history.csv")
    resumed, reference = read_json(run_dir / "train.json"), read_json(reference_dir / "train.json")
    assert resumed["train"]["steps"] == reference["train"]["steps"] == 60
    assert resumed["train"]["loss"] == reference["train"]["loss"]
    assert resumed["val_sampled"]["loss"] == reference["val_sampled"]["loss"]
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    reference_weights = torch.load(reference_dir / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ]
    for name, tensor in reference_weights.items():
        assert torch.equal(weights[name], tensor), name

    # One W&B run id across both segments; the resumed one starts after the checkpoint.
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    segments = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(segments) == 2
    killed_steps = logged_steps(segments[0], "train/loss")
    resumed_steps = logged_steps(segments[1], "train/loss")
    # Lightning logs the row of step s under trainer/global_step s - 1.
    assert resumed_steps == list(range(killed_at + 4, 60, 5))
    # No point is sent twice. NOTE: the killed segment may lack its last points, those that
    # W&B had accepted but not yet flushed to its offline file when the SIGKILL came.
    assert all(step < killed_at for step in killed_steps)
    assert killed_steps == sorted(set(killed_steps))


def logged_steps(segment: Path, key: str) -> list[int]:
    """trainer/global_step of every history record of an offline W&B run that contains key.

    The records are read with wandb's own `wandb leet inspect`.
    """
    wandb_cli = Path(sys.executable).with_name("wandb")
    records = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(segment)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    steps = []
    for line in records.splitlines():
        record = json.loads(line)
        if record.get("type") != "history":
            continue
        items = record["history"]["item"]
        if key in items:
            steps.append(int(items["trainer/global_step"]))
    return steps


@pytest.mark.slow
def test_same_seed_identical_across_processes(tmp_path, tiny_data_dir, reference_run):
    _, reference_dir = reference_run
    run_dir = tmp_path / "run"
    run_to_end(train_command(tiny_data_dir, run_dir, "logger=none"), subprocess_env(tmp_path))
    assert read_history(run_dir / "history.csv") == read_history(reference_dir / "history.csv")
    assert (
        read_json(run_dir / "train.json")["train"]["loss"]
        == read_json(reference_dir / "train.json")["train"]["loss"]
    )


# Bad input: each rejected before training, with a message naming the value and the fix


CONFIG_ERRORS = [
    (["attention=mlx"], MissingConfigException, "Could not find 'attention/mlx'"),
    (["model.dimm=64"], ConfigCompositionException, "Could not override 'model.dimm'"),
    (
        ["model=tiny", "model.n_heads=5"],
        ValueError,
        "model.dim=64 is not divisible by model.n_heads=5: pick n_heads that divides dim",
    ),
    (
        ["model=tiny", "attention=gqa", "model.n_kv_heads=3"],
        ValueError,
        "model.n_heads=4 is not divisible by model.n_kv_heads=3: choose n_kv_heads",
    ),
    (
        ["model=tiny", "attention=mla", "model.qk_rope_head_dim=7"],
        ValueError,
        "model.qk_rope_head_dim=7 is odd: rotary embeddings rotate channel pairs",
    ),
    (
        ["model=tiny", "attention=mla", "model.kv_lora_rank=0"],
        ValueError,
        "model.kv_lora_rank=0 is invalid: it must be positive",
    ),
    (
        ["model=tiny", "attention=mla", "model.q_lora_rank=-8"],
        ValueError,
        "model.q_lora_rank=-8 is invalid: use 0 for a full-rank query",
    ),
    (
        ["model=tiny", "ffn=moe", "model.n_activated_experts=99"],
        ValueError,
        "model.n_activated_experts=99 exceeds model.n_routed_experts",
    ),
    (
        ["model=tiny", "ffn=moe", "model.n_expert_groups=3"],
        ValueError,
        "model.n_expert_groups=3 does not divide model.n_routed_experts",
    ),
    (
        ["model=tiny", "data.seq_len=512"],
        ValueError,
        "data.seq_len=512 exceeds model.max_seq_len=128: lower data.seq_len",
    ),
    (["optim.lr=0"], ValueError, "optim.lr=0.0 is invalid: it must be positive"),
    (["optim.lr=-0.001"], ValueError, "optim.lr=-0.001 is invalid: it must be positive"),
    (["trainer.max_steps=0"], ValueError, "trainer.max_steps=0 is invalid: it must be positive"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), CONFIG_ERRORS)
def test_bad_config_rejected(overrides, error, message):
    with pytest.raises(error) as caught:
        to_object(compose_config("train", overrides))
    assert message in str(caught.value)


def test_batch_data_cannot_fill_rejected(tmp_path, tiny_data_dir):
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "run", "data.batch_size=5000")
    with pytest.raises(
        ValueError, match="exceeds the .* training tokens in .*: lower data.batch_size"
    ):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "corpus file not found:"),
        (b"  \n\n", "corpus file is empty:"),
        (b"PK\x03\x04\x00\x00binary", "corpus file looks binary (it contains NUL bytes):"),
        ("caf\u00e9 latin-1".encode("latin-1"), "corpus file is not valid UTF-8 at byte 3:"),
    ],
)
def test_bad_corpus_rejected(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError) as caught:
        read_text_file(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.fixture
def data_copy(tmp_path, tiny_data_dir) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_data_dir, copy)
    return copy


def test_token_files_of_other_tokenizer_rejected(tmp_path, data_copy):
    tokenizer = json.loads((data_copy / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["zzzz"] = 511
    del tokenizer["model"]["vocab"][next(iter(tokenizer["model"]["vocab"]))]
    (data_copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    cfg = tiny_train_config(data_copy, tmp_path / "run")
    with pytest.raises(ValueError, match="they come from a different tokenizer"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_vocab_beyond_token_dtype_rejected(tmp_path, data_copy):
    meta = read_json(data_copy / "meta.json")
    meta["vocab_size"] = 70_000
    write_json(data_copy / "meta.json", meta)
    cfg = tiny_train_config(data_copy, tmp_path / "run", "tokenizer=bpe", "model.vocab_size=null")
    with pytest.raises(
        ValueError, match="vocabulary of 70000 tokens does not fit the token files' dtype uint16"
    ):
        train(cfg)
    with pytest.raises(ValueError, match="does not fit in uint32 token ids"):
        token_dtype(2**32 + 1)


def test_bad_input_leaves_outputs_untouched(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    train(guarded_config(tiny_data_dir, run_dir, "trainer.max_steps=10"))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    env = subprocess_env(tmp_path)
    result = subprocess.run(
        train_command(tiny_data_dir, run_dir, "logger=none", "model.n_heads=3"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "model.dim=64 is not divisible by model.n_heads=3" in result.stderr + result.stdout
    for path, content in before.items():
        assert path.read_bytes() == content, path


# Concurrency


def test_busy_run_dir_rejected(tmp_path):
    with locked_run_dir(tmp_path / "run"):
        with pytest.raises(
            RunDirBusy,
            match=rf"run_dir {tmp_path / 'run'} is in use by .* \(pid {os.getpid()}\)",
        ):
            with locked_run_dir(tmp_path / "run"):
                pass
    with locked_run_dir(tmp_path / "run"):
        pass


def test_wandb_dir_escapes_dvc_workspace(tmp_path):
    workspace = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    assert wandb_dir_outside_dvc_workspace(workspace) == tmp_path / "repo"
    assert wandb_dir_outside_dvc_workspace(tmp_path / "repo") == tmp_path / "repo"


def test_restart_on_change_trains_anew(tmp_path, tiny_data_dir, monkeypatch):
    run_dir = tmp_path / "run"
    train(guarded_config(tiny_data_dir, run_dir, "trainer.max_steps=10"))
    (run_dir / "train.json").unlink()

    # Another learning rate: rejected by hand, restarted from step 0 under DVC's flag.
    with pytest.raises(ValueError, match="contains a checkpoint of a different configuration"):
        train(guarded_config(tiny_data_dir, run_dir, "trainer.max_steps=10", "optim.lr=0.001"))
    cfg = guarded_config(
        tiny_data_dir, run_dir, "trainer.max_steps=10", "optim.lr=0.001", "restart_on_change=true"
    )
    assert train(cfg)["train"]["steps"] == 10
    assert [row["step"] for row in read_history(run_dir / "history.csv")][0] == "10"

    # Other code, same config: the finished run is trained again, not skipped or resumed.
    (run_dir / "train.json").unlink()
    monkeypatch.setattr(run_module, "code_version", lambda: "edited")
    started = []
    cfg = guarded_config(
        tiny_data_dir, run_dir, "trainer.max_steps=10", "optim.lr=0.001", "restart_on_change=true"
    )
    train(cfg, extra_callbacks=(RecordStart(started),))
    assert started == [0]


class RecordStart(L.Callback):
    def __init__(self, started: list[int]):
        self.started = started

    def on_train_start(self, trainer, pl_module) -> None:
        self.started.append(trainer.global_step)


@pytest.mark.slow
def test_queued_dvc_experiment_keeps_wandb_runs(tmp_path, shakespeare_dir):
    from tests.test_pipeline import TINY_PARAMS, run

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("conf", "pipelines", "src"):
        shutil.copytree(
            REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["ablation"]["attention"] = ["mha"]
    params["train"].update(max_steps=10, val_check_interval=5)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    bin_dir = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items() if key not in ("WANDB_DIR", "DVC_ROOT")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        TINYSEEK_DATA_DIR=str(shakespeare_dir),
        TINYSEEK_CACHE_DIR=str(tmp_path / "cache"),
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo, env)
    run([*dvc, "init", "-q"], repo, env)
    run([*dvc, "config", "core.analytics", "false"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline"], repo, env)

    run([*dvc, "exp", "run", "--queue", "-S", "train.lr=0.002"], repo, env)
    run([*dvc, "exp", "run", "--queue", "-S", "train.lr=0.004"], repo, env)
    run([*dvc, "exp", "run", "--run-all"], repo, env)

    # Each queued experiment ran train, evaluate and report in a deleted temporary
    # workspace; their offline W&B runs landed in the repository's wandb/ folder.
    runs = sorted((repo / "wandb").glob("offline-run-*"))
    assert len(runs) == 6
    assert len({path.name.rsplit("-", 1)[1] for path in runs}) == 6
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("tmp*"))
