"""Experiment tracking: W&B mode resolution, loggers, run metadata."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinyseek.config import LoggerConfig

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")


def resolve_wandb_mode(cfg: LoggerConfig, environ: Mapping[str, str], netrc_path: Path) -> str:
    """Choose the W&B mode: logger.mode, else WANDB_MODE, else online with a key, else offline."""
    mode = cfg.mode or environ.get("WANDB_MODE")
    if mode:
        if mode not in WANDB_MODES:
            raise ValueError(f"W&B mode {mode!r} is invalid: use one of {', '.join(WANDB_MODES)}.")
        return mode
    has_key = bool(environ.get("WANDB_API_KEY")) or (
        netrc_path.is_file() and "api.wandb.ai" in netrc_path.read_text(errors="ignore")
    )
    return "online" if has_key else "offline"


def git_commit(cwd: str | Path = ".") -> str | None:
    """Return the checked-out commit, suffixed '-dirty' when tracked files changed.

    Returns None outside a git checkout.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def start_wandb_run(
    cfg: LoggerConfig,
    mode: str,
    name: str,
    group: str,
    job_type: str,
    tags: list[str],
    config: dict[str, Any],
    run_id: str | None = None,
):
    """Start one W&B run for this job; the caller finishes it in `finally`."""
    import wandb

    return wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        name=name,
        group=group,
        job_type=job_type,
        tags=sorted(set(cfg.tags) | set(tags)),
        config=config,
        mode=mode,
        id=run_id,
        resume="allow" if run_id else None,
        reinit="finish_previous",
    )


# How the W&B summary (and the runs table) condenses each logged series.
SUMMARY_METRICS = {
    "train/loss": "last",
    "val/loss": "min",  # the best sampled validation loss of a training run
    "val/bpb": "last",  # the final whole-split bits per byte, logged by the evaluate job
    "throughput/tokens_per_s": "mean",
    "memory/peak_bytes": "max",
}


def declare_summary_metrics(run) -> None:
    """Declare how the W&B summary condenses each headline metric of a run."""
    for name, summary in SUMMARY_METRICS.items():
        run.define_metric(name, summary=summary)


def finish_wandb_run() -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish()
