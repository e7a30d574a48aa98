"""Log a built report to W&B as its own job: the summary table and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyseek.config import ReportConfig
from tinyseek.reporting.table import COLUMNS
from tinyseek.tracking import start_wandb_run


def log_report(cfg: ReportConfig, summary: dict[str, Any], mode: str) -> None:
    import wandb

    run = start_wandb_run(
        cfg.logger,
        mode,
        name=f"report-{cfg.ablation}",
        group=cfg.ablation,
        job_type="report",
        tags=[],
        config={
            "runs": cfg.runs,
            "baseline": summary["baseline"],
            "provenance": summary["provenance"],
        },
    )
    keys = [key for key, _, _ in COLUMNS]
    table = wandb.Table(columns=keys, data=[[row[key] for key in keys] for row in summary["rows"]])
    figures = {
        f"figures/{p.stem}": wandb.Image(str(p))
        for p in sorted((Path(cfg.out) / "figures").glob("*.png"))
    }
    run.log({"summary_table": table, **figures})
