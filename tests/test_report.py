"""The ablation report from a folder of tiny real runs: statistics, files, W&B, Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, tiny_train_config
from tinyseek.config import EvalConfig, EvaluateConfig, LoggerConfig
from tinyseek.evaluation.run import evaluate
from tinyseek.reporting.stats import summarize, welch_compare
from tinyseek.training.run import train

# Two variants, two seeds each, in numbered job folders as a Hydra multirun writes them.
JOBS = [("mha", 0), ("mha", 1), ("mqa", 0), ("mqa", 1)]


@pytest.fixture(scope="module")
def multirun_dir(tmp_path_factory, tiny_data_dir) -> Path:
    root = tmp_path_factory.mktemp("multirun")
    for job, (attention, seed) in enumerate(JOBS):
        run_dir = root / str(job)
        cfg = tiny_train_config(
            tiny_data_dir,
            run_dir,
            f"attention={attention}",
            f"seed={seed}",
            "trainer.max_steps=20",
            "trainer.val_check_interval=10",
            "trainer.limit_val_batches=2",
            "optim.warmup_steps=5",
        )
        train(cfg)
        evaluate(
            EvaluateConfig(
                run_dir=str(run_dir),
                eval=EvalConfig(decode_tokens=4, prompt_tokens=8, sample_tokens=8),
                logger=LoggerConfig(type="none"),
            )
        )
    return root


@pytest.fixture(scope="module")
def report(multirun_dir, tmp_path_factory):
    """The report built by the real entry point, logged to an offline W&B run."""
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(out)}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "report.py"),
            f"runs=[{multirun_dir}]",
            "baseline=mha-dense-fp32",
            "ablation=report_test",
            f"out={out}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def metrics_of(multirun_dir: Path) -> dict[str, dict]:
    runs = {}
    for job in range(len(JOBS)):
        metrics = json.loads((multirun_dir / str(job) / "metrics.json").read_text())
        runs[metrics["variant"]] = metrics
    return runs


def test_report_groups_seeds_by_variant(report):
    summary = json.loads((report / "summary.json").read_text())
    assert [row["variant"] for row in summary["rows"]] == ["mha-dense-fp32", "mqa-dense-fp32"]
    assert [row["seeds"] for row in summary["rows"]] == [2, 2]
    assert summary["rows"][1]["runs"] == ["mqa-dense-fp32-s0", "mqa-dense-fp32-s1"]


def test_report_statistics_match_run_metrics(report, multirun_dir):
    summary = json.loads((report / "summary.json").read_text())
    runs = metrics_of(multirun_dir)
    bpb = {
        variant: [runs[f"{variant}-s{seed}"]["val"]["bpb"] for seed in (0, 1)]
        for variant in ("mha-dense-fp32", "mqa-dense-fp32")
    }
    mha, mqa = summary["rows"]
    assert mqa["stats"]["val_bpb"] == summarize(bpb["mqa-dense-fp32"]).as_dict()
    expected = welch_compare(bpb["mqa-dense-fp32"], bpb["mha-dense-fp32"]).as_dict()
    assert mqa["vs_baseline"]["val_bpb"] == expected
    assert mha["stats"]["val_bpb"]["mean"] == pytest.approx(np.mean(bpb["mha-dense-fp32"]))
    # tiny: 4 query heads against 1 key/value head caches a quarter of MHA's bytes.
    assert mqa["kv_reduction"] == 4.0


def test_report_states_matched_budget(report):
    summary = json.loads((report / "summary.json").read_text())
    assert summary["budget"]["steps"] == 20
    assert summary["budget"]["tokens"] == 20 * 8 * 64
    markdown = (report / "ablation.md").read_text()
    assert "Matched budget: every run trained 20 steps on 10,240 tokens." in markdown
    assert "Activated parameters per token range from" in markdown
    assert "Welch" in markdown


def test_report_table_marks_noise(report):
    markdown = (report / "ablation.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | seeds | val bpb (mean ± sd) | val bpb 95 % CI |")
    assert table[2].startswith("| mha-dense-fp32 | 2 |")
    assert "| baseline |" in table[2]
    assert re.search(r"\| (within noise|better|worse) \|", table[3])


def test_report_figures_and_provenance(report):
    for name in ("loss_curves", "val_bpb", "kv_bytes", "tokens_per_s", "peak_memory"):
        assert (report / "figures" / f"{name}.png").is_file(), name
    assert not (report / "figures" / "moe_maxvio.png").exists()
    summary = json.loads((report / "summary.json").read_text())
    prov = summary["provenance"]
    assert set(prov["packages"]) >= {"torch", "scipy", "dvc"}
    assert "machine" in prov
    assert "## Provenance" in (report / "ablation.md").read_text()


def test_html_is_self_contained(report):
    page = (report / "ablation.html").read_text()
    assert '<table id="summary">' in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources, "the page embeds no figure"
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in page
    assert "https://" not in page


def test_report_logged_as_wandb_job(report):
    runs = sorted((report / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    wandb_cli = Path(sys.executable).with_name("wandb")
    inspected = json.loads(
        subprocess.run(
            [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(runs[0])],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )
    assert inspected["name"] == "report-report_test"
    assert inspected["state"] == "finished"
    assert "summary_table" in inspected["summary"]
    assert "figures/val_bpb" in inspected["summary"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def color_pixels(image: np.ndarray, rgb: tuple[int, int, int]) -> int:
    """Pixels of exactly one colour in an (H, W, 3 or 4) image of floats in [0, 1]."""
    pixels = np.round(image[..., :3] * 255).astype(int)
    return int(np.all(pixels == np.asarray(rgb), axis=-1).sum())


def test_chromium_screenshot_shows_table_and_figure(report, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium (.ci/run does it)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1800",
            f"--screenshot={shot}",
            (report / "ablation.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1800, 1400)
    # The table header's background (#dbe4f0) and the bars' fill (#4c72b0) of an embedded
    # figure: both are drawn only when the table and the image render.
    assert color_pixels(image, (0xDB, 0xE4, 0xF0)) > 2_000
    assert color_pixels(image, (0x4C, 0x72, 0xB0)) > 2_000
