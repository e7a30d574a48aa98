"""The benchmark suite runs end to end at its smallest settings; its timings are not checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import peers
from benchmarks.common import model_config, random_batch

ROOT = Path(__file__).resolve().parents[1]


def test_peers_compare_every_pair_in_both_precisions():
    rows = peers.run("tiny", batch_size=2, seq_len=16, rounds=1, steps=1)

    pairs = {(row["variant"], row["precision"]) for row in rows}
    assert pairs == {
        (f"{attention}-{ffn}", precision)
        for attention, ffn in peers.PAIRS
        for precision in peers.PRECISIONS
    }
    assert all(row["speedup"] > 0 for row in rows)


@pytest.mark.parametrize(("attention", "ffn"), peers.PAIRS)
def test_peer_has_the_same_parameter_count(attention, ffn):
    cfg = model_config("tiny", attention, ffn)
    batch = random_batch(2, 16)

    _, ours = peers.tinyseek_step(cfg, batch)
    _, theirs, _ = peers.hf_step(cfg, batch)

    # tinyseek keeps each MoE layer's routing bias (one value per expert) as a parameter
    # without gradient; transformers keeps it as a buffer.
    n_moe_layers = cfg.n_layers - cfg.n_dense_layers if ffn == "moe" else 0
    assert ours - theirs == n_moe_layers * cfg.n_routed_experts


def test_run_writes_results_json_and_markdown(tmp_path):
    command = [sys.executable, "-m", "benchmarks.run", "--sections", "peers,loop"]
    command += ["--sizes", "tiny", "--precisions", "fp32", "--rounds", "1", "--steps", "1"]
    command += ["--out", str(tmp_path)]

    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)

    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["precision"] for row in results["peers"]["rows"]] == ["fp32"] * 3
    assert len(results["loop"]["rows"]) == 2
    markdown = (tmp_path / "results.md").read_text()
    assert "## Forward + backward against Hugging Face transformers" in markdown
    assert "## Lightning step against a bare PyTorch loop" in markdown


def test_run_rejects_unknown_size_before_any_work(tmp_path):
    command = [sys.executable, "-m", "benchmarks.run", "--sections", "peers"]
    command += ["--sizes", "tiny,huge", "--out", str(tmp_path / "out")]

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 2
    assert "--sizes: unknown value(s) 'huge'; choose from" in result.stderr
    assert not (tmp_path / "out").exists()
