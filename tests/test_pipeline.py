"""A real `dvc repro` of a tiny ablation in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

VARIANTS = ["mha-dense-fp32-s0", "gqa-dense-fp32-s0", "mla-dense-fp32-s0"]
TINY_PARAMS = {
    "ablation": {
        "study": "attention",
        "name": "pipeline_test",
        "model": "tiny",
        "baseline": "mha-dense-fp32",
        "runs": {
            name: {"attention": name.split("-")[0], "ffn": "dense", "precision": "fp32", "seed": 0}
            for name in VARIANTS
        },
    },
    "data": {"corpus": "tinyshakespeare", "tokenizer": "bpe"},
    "train": {
        "max_steps": 30,
        "batch_size": 8,
        "seq_len": 64,
        "lr": 0.003,
        "warmup_steps": 5,
        "val_check_interval": 15,
    },
    "eval": {"batch_size": 32, "decode_tokens": 8},
}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, shakespeare_dir):
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    for name in ("conf", "pipelines", "src"):
        shutil.copytree(
            REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))

    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TINYSEEK_DATA_DIR": str(shakespeare_dir),
        "TINYSEEK_CACHE_DIR": str(repo.parent / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(repo.parent),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo, env)
    run([*dvc, "init", "-q"], repo, env)
    run([*dvc, "config", "core.analytics", "false"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "tiny pipeline"], repo, env)
    first = run([*dvc, "repro"], repo, env)
    return repo, env, dvc, first


def test_repro_produces_every_output(pipeline_repo):
    repo, _, _, _ = pipeline_repo
    assert (repo / "data" / "tinyshakespeare" / "meta.json").is_file()
    for variant in VARIANTS:
        assert (repo / "runs" / variant / "metrics.json").is_file(), variant
    for name in ("ablation.md", "ablation.html", "summary.json", "figures/loss_curves.png"):
        assert (repo / "reports" / name).is_file(), name


def test_mla_metrics_cover_both_decode_paths(pipeline_repo):
    repo, _, _, _ = pipeline_repo
    metrics = json.loads((repo / "runs" / "mla-dense-fp32-s0" / "metrics.json").read_text())
    decode = metrics["decode"]
    assert decode["path"] == "absorbed"
    assert decode["absorbed_tokens_per_s"] > 0
    assert decode["naive_tokens_per_s"] > 0
    assert decode["naive_kv_bytes_per_token_measured"] == decode["naive_kv_bytes_per_token"]
    # tiny MLA caches (64 + 8) fp32 elements in each of 2 layers.
    assert metrics["kv_cache"]["bytes_per_token"] == 72 * 2 * 4
    assert metrics["kv_cache"]["bytes_per_token_measured"] == 72 * 2 * 4


def test_report_numbers_equal_metrics(pipeline_repo):
    repo, _, _, _ = pipeline_repo
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    markdown = (repo / "reports" / "ablation.md").read_text()
    assert [row["runs"] for row in summary["rows"]] == [[name] for name in VARIANTS]
    for row in summary["rows"]:
        metrics = json.loads((repo / "runs" / row["runs"][0] / "metrics.json").read_text())
        assert row["stats"]["val_loss"]["mean"] == metrics["val"]["loss"]
        assert row["stats"]["val_bpb"]["mean"] == metrics["val"]["bpb"]
        assert row["stats"]["kv_bytes_per_token"]["mean"] == metrics["kv_cache"]["bytes_per_token"]
        assert row["stats"]["tokens_per_s"]["mean"] == metrics["throughput"]["tokens_per_s"]
        assert f"{metrics['val']['bpb']:.4f}" in markdown
    mha, gqa, mla = summary["rows"]
    assert mha["kv_reduction"] == 1.0
    # tiny: 4 query heads against 2 key/value heads halves the cache.
    assert gqa["kv_reduction"] == 2.0
    # MLA: 2 * n_heads * head_dim / (kv_lora_rank + qk_rope_head_dim) = 2 * 4 * 16 / (64 + 8).
    assert mla["kv_reduction"] == pytest.approx(128 / 72)
    assert "| mla-dense-fp32 | 1 |" in markdown
    assert "1.78×" in markdown
    assert "untested (one seed)" in markdown


def test_report_lists_lock_hashes(pipeline_repo):
    repo, _, _, _ = pipeline_repo
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    outs = summary["provenance"]["dvc_lock_outs"]
    assert set(outs) == {"prepare"} | {f"{s}@{v}" for v in VARIANTS for s in ("train", "evaluate")}
    assert len(outs["train@mla-dense-fp32-s0"]["runs/mla-dense-fp32-s0/checkpoints"]) > 0


def test_second_repro_runs_nothing(pipeline_repo):
    repo, env, dvc, first = pipeline_repo
    assert "Running stage 'train@mha-dense-fp32-s0'" in first
    status = run([*dvc, "status"], repo, env)
    assert "up to date" in status
    second = run([*dvc, "repro"], repo, env)
    assert "Running stage" not in second


def test_config_edit_reruns_only_its_stages(pipeline_repo):
    repo, env, dvc, _ = pipeline_repo
    gqa_config = repo / "conf" / "attention" / "gqa.yaml"
    gqa_config.write_text(gqa_config.read_text() + "# edited\n")
    status = run([*dvc, "status"], repo, env)
    assert "train@gqa-dense-fp32-s0" in status
    assert "train@mha-dense-fp32-s0" not in status

    rerun = run([*dvc, "repro"], repo, env)
    assert "Running stage 'train@gqa-dense-fp32-s0'" in rerun
    assert "Running stage 'train@mla-dense-fp32-s0'" not in rerun
    assert "Running stage 'evaluate@gqa-dense-fp32-s0'" in rerun
    assert "Running stage 'report'" in rerun
    assert "Running stage 'train@mha-dense-fp32-s0'" not in rerun
    assert "Running stage 'prepare'" not in rerun
