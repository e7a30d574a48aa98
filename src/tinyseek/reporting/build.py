"""Write the ablation report: ablation.md, ablation.html, figures/*.png and summary.json."""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

from tinyseek.config import ReportConfig
from tinyseek.io import write_json, write_text
from tinyseek.reporting import figures
from tinyseek.reporting.collect import Run, load_runs, runs_from_params
from tinyseek.reporting.provenance import provenance
from tinyseek.reporting.table import COLUMNS, format_cell, markdown_table, summary_rows

log = logging.getLogger(__name__)


def build_report(cfg: ReportConfig, commit: str | None = None) -> dict[str, Any]:
    """Collect the runs in cfg.runs and write the report files into cfg.out."""
    paths = runs_from_params(cfg.params_file, cfg.runs_root) if cfg.params_file else []
    paths += cfg.runs
    if not paths:
        raise ValueError("no runs given: pass runs=[runs/a,runs/b] or params_file=params.yaml.")
    runs = load_runs(paths)
    baseline = cfg.baseline or runs[0].variant
    rows = summary_rows(runs, baseline)
    out = Path(cfg.out)

    figure_paths = {
        "loss_curves": figures.loss_curves(runs, out / "figures" / "loss_curves.png"),
        "val_bpb": figures.bar_chart(
            rows, "val_bpb", "val bits per byte", out / "figures" / "val_bpb.png"
        ),
        "kv_bytes": figures.bar_chart(
            rows, "kv_bytes_per_token", "KV-cache bytes per token", out / "figures" / "kv_bytes.png"
        ),
        "tokens_per_s": figures.bar_chart(
            rows, "tokens_per_s", "training tokens/s", out / "figures" / "tokens_per_s.png"
        ),
    }
    heatmap = figures.expert_load_heatmap(runs, out / "figures" / "expert_load.png")
    if heatmap is not None:
        figure_paths["expert_load"] = heatmap
    summary = {
        "title": cfg.title,
        "ablation": cfg.ablation,
        "baseline": baseline,
        "budget": _budget(runs),
        "moe_matching": _moe_matching(runs),
        "rows": rows,
        "runs": {run.variant: {"path": str(run.path), "metrics": run.metrics} for run in runs},
        "provenance": provenance(commit),
    }

    write_json(out / "summary.json", summary)
    write_text(out / "ablation.md", render_markdown(summary, figure_paths, out))
    write_text(out / "ablation.html", render_html(summary, figure_paths))
    log.info("report for %d runs written to %s", len(runs), out)
    return summary


def _budget(runs: list[Run]) -> dict[str, Any]:
    """Collect the training budget of the runs, per variant where budgets differ."""
    steps = {run.variant: run.metrics["train"]["steps"] for run in runs}
    tokens = {run.variant: run.metrics["train"]["tokens"] for run in runs}
    return {
        "steps": next(iter(steps.values())) if len(set(steps.values())) == 1 else steps,
        "tokens": next(iter(tokens.values())) if len(set(tokens.values())) == 1 else tokens,
    }


def _moe_matching(runs: list[Run]) -> str | None:
    """Describe how MoE variants are sized against dense ones, if the report has MoE runs."""
    has_moe = any("moe" in run.metrics for run in runs)
    if not has_moe:
        return None
    return (
        "MoE variants match the dense feed-forward's activated width: "
        "(n_shared_experts + n_activated_experts) * moe_inter_dim = inter_dim, so each token "
        "runs as many expert FLOPs as the dense block (the router adds dim * n_routed_experts "
        "parameters per MoE layer). Total parameters grow with the routed experts."
    )


def _budget_sentence(summary: dict[str, Any]) -> str:
    budget = summary["budget"]
    if isinstance(budget["steps"], dict):
        return "Runs had different training budgets; see summary.json."
    return f"Every variant trained for {budget['steps']:,} steps on {budget['tokens']:,} tokens."


def render_markdown(summary: dict[str, Any], figure_paths: dict[str, Path], out: Path) -> str:
    lines = [
        f"# {summary['title']}",
        "",
        f"Baseline: `{summary['baseline']}`. {_budget_sentence(summary)} Validation loss and "
        "bits per UTF-8 byte (bpb) cover the whole validation split, and bpb compares across "
        "tokenizers.",
        "",
        markdown_table(summary["rows"]),
        "",
    ]
    if summary["moe_matching"]:
        lines += [summary["moe_matching"], ""]
    for name, path in figure_paths.items():
        lines += [f"![{name}]({path.relative_to(out).as_posix()})", ""]
    lines += ["## Provenance", "", "```", _provenance_text(summary["provenance"]), "```", ""]
    return "\n".join(lines)


def _provenance_text(prov: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
    machine = prov["machine"]
    return "\n".join(
        [
            f"git commit: {prov['git_commit']}",
            f"dvc.lock sha256: {prov['dvc_lock_sha256']}",
            f"packages: {packages}",
            f"machine: {machine['platform']}, {machine['processor']}, "
            f"{machine['cpu_count']} CPUs, Python {machine['python']}",
        ]
    )


def _embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def render_html(summary: dict[str, Any], figure_paths: dict[str, Path]) -> str:
    """Render a self-contained page: figures are embedded, so it needs no network or files."""
    header = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(format_cell(row[key], fmt))}</td>" for key, _, fmt in COLUMNS)
        + "</tr>"
        for row in summary["rows"]
    )
    images = "".join(_embedded_image(path, name) for name, path in figure_paths.items())
    title = html.escape(summary["title"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child {{ text-align: left; font-family: monospace; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 640px; }}
pre {{ background: #f7f7f7; padding: 1em; white-space: pre-wrap; }}
</style></head><body>
<h1>{title}</h1>
<p>Baseline: <code>{html.escape(summary["baseline"])}</code>.
{html.escape(_budget_sentence(summary))}
Validation loss and bits per UTF-8 byte (bpb) cover the whole validation split.</p>
<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>
<p>{html.escape(summary["moe_matching"] or "")}</p>
{images}
<h2>Provenance</h2><pre>{html.escape(_provenance_text(summary["provenance"]))}</pre>
</body></html>
"""
