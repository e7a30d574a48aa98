"""Log a built report to W&B as its own job: the summary table and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyseek.config import ReportConfig
from tinyseek.reporting.table import METRICS
from tinyseek.tracking import start_wandb_run


def summary_table_data(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Numeric columns per variant: each metric's mean, std and interval, the bpb test."""
    columns = ["variant", "seeds"]
    for metric in METRICS:
        columns += [f"{metric.key}/{part}" for part in ("mean", "std", "ci_low", "ci_high")]
    columns += ["val_bpb/diff", "val_bpb/p_value", "val_bpb/within_noise"]
    data = []
    for row in summary["rows"]:
        line: list[Any] = [row["variant"], row["seeds"]]
        for metric in METRICS:
            stat = row["stats"].get(metric.key) or {}
            line += [stat.get(part) for part in ("mean", "std", "ci_low", "ci_high")]
        test = row["vs_baseline"].get("val_bpb") or {}
        line += [test.get("diff"), test.get("p_value"), test.get("within_noise")]
        data.append(line)
    return columns, data


def log_report(cfg: ReportConfig, summary: dict[str, Any], mode: str) -> None:
    """Log the report as a W&B run of job_type `report` in the ablation's group."""
    import wandb

    run = start_wandb_run(
        cfg.logger,
        mode,
        name=f"report-{cfg.ablation}",
        group=cfg.ablation,
        job_type="report",
        tags=[f"ablation:{cfg.ablation}"],
        config={
            "runs": sorted(summary["runs"]),
            "baseline": summary["baseline"],
            "budget": summary["budget"],
            "provenance": summary["provenance"],
        },
    )
    columns, data = summary_table_data(summary)
    figures = {
        f"figures/{p.stem}": wandb.Image(str(p))
        for p in sorted((Path(cfg.out) / "figures").glob("*.png"))
    }
    run.log({"summary_table": wandb.Table(columns=columns, data=data), **figures})
    for row in summary["rows"]:
        bpb = row["stats"].get("val_bpb")
        if bpb is not None:
            run.summary[f"val_bpb/{row['variant']}"] = bpb["mean"]
