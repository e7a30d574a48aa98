"""Write the ablation report: ablation.md, ablation.html, figures/*.png and summary.json.

The report is the list SECTIONS. Each section renders to Markdown and to HTML from the same
summary, so one more section is one more function in that list.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyseek.config import ReportConfig
from tinyseek.io import write_json, write_text
from tinyseek.reporting import figures
from tinyseek.reporting.collect import Run, load_runs, runs_from_params
from tinyseek.reporting.parity import fp8_parity, parity_figure, parity_markdown
from tinyseek.reporting.provenance import provenance
from tinyseek.reporting.stats import ALPHA, CONFIDENCE
from tinyseek.reporting.table import (
    METRIC_BY_KEY,
    markdown_table,
    table_cells,
    variant_of,
    variant_rows,
)

log = logging.getLogger(__name__)

# Bar charts with intervals, in page order: (metric key, file stem). Missing metrics are skipped.
BAR_FIGURES = [
    ("val_bpb", "val_bpb"),
    ("kv_bytes_per_token", "kv_bytes"),
    ("tokens_per_s", "tokens_per_s"),
    ("peak_memory_mib", "peak_memory"),
    ("device_hours", "device_hours"),
    ("val_maxvio", "moe_maxvio"),
    ("fp8_loss_error", "fp8_loss_error"),
]


@dataclass
class Section:
    """One part of the report, with text and figures."""

    title: str
    markdown: str
    html: str
    figures: list[Path] = field(default_factory=list)


def build_report(cfg: ReportConfig, commit: str | None = None) -> dict[str, Any]:
    """Collect the runs in cfg.runs (and cfg.params_file) and write the report into cfg.out."""
    paths = runs_from_params(cfg.params_file, cfg.runs_root) if cfg.params_file else []
    paths += cfg.runs
    if not paths:
        raise ValueError("no runs given: pass runs=[runs/a,runs/b] or params_file=params.yaml.")
    runs = load_runs(paths)
    baseline = variant_of(cfg.baseline or runs[0].variant)
    rows = variant_rows(runs, baseline)
    out = Path(cfg.out)

    figure_paths = {"loss_curves": figures.loss_curves(runs, out / "figures" / "loss_curves.png")}
    for key, stem in BAR_FIGURES:
        label = METRIC_BY_KEY[key].label
        path = figures.interval_bars(rows, key, label, out / "figures" / f"{stem}.png")
        if path is not None:
            figure_paths[stem] = path
    heatmap = figures.expert_load_heatmap(runs, out / "figures" / "expert_load.png")
    if heatmap is not None:
        figure_paths["expert_load"] = heatmap
    parity = fp8_parity(runs)
    parity_plot = parity_figure(parity, out / "figures" / "fp8_parity.png")
    if parity_plot is not None:
        figure_paths["fp8_parity"] = parity_plot

    stages = ["prepare"] + [
        f"{stage}@{run.variant}" for run in runs for stage in ("train", "evaluate")
    ]
    summary = {
        "title": cfg.title if cfg.ablation == "adhoc" else f"{cfg.title}: {cfg.ablation}",
        "ablation": cfg.ablation,
        "baseline": baseline,
        "budget": _budget(runs),
        "moe_matching": _moe_matching(runs),
        "rows": rows,
        "runs": {run.variant: {"path": str(run.path), "metrics": run.metrics} for run in runs},
        "fp8_parity": [{k: v for k, v in row.items() if "curve" not in k} for row in parity],
        "figures": {name: path.relative_to(out).as_posix() for name, path in figure_paths.items()},
        "provenance": provenance(commit, stages=stages),
    }
    sections = [section(summary, figure_paths) for section in SECTIONS]
    sections = [s for s in sections if s is not None]

    write_json(out / "summary.json", summary)
    write_text(out / "ablation.md", render_markdown(summary, sections, out))
    write_text(out / "ablation.html", render_html(summary, sections))
    log.info("report for %d runs of %d variants written to %s", len(runs), len(rows), out)
    return summary


def _same_or_each(values: dict[str, Any]) -> Any:
    distinct = set(values.values())
    return next(iter(distinct)) if len(distinct) == 1 else values


def _budget(runs: list[Run]) -> dict[str, Any]:
    """The training budget: one value where every run matches, else the value per run."""
    return {
        "steps": _same_or_each({r.variant: r.metrics["train"]["steps"] for r in runs}),
        "tokens": _same_or_each({r.variant: r.metrics["train"]["tokens"] for r in runs}),
        "params_active": {variant_of(r.variant): r.metrics["params"]["active"] for r in runs},
    }


def _moe_matching(runs: list[Run]) -> str | None:
    """Describe how MoE variants are sized against dense ones, if the report has MoE runs."""
    if not any("moe" in run.metrics for run in runs):
        return None
    return (
        "MoE variants match the dense feed-forward's activated width: "
        "(n_shared_experts + n_activated_experts) * moe_inter_dim = inter_dim, so each token "
        "runs as many expert FLOPs as the dense block (the router adds dim * n_routed_experts "
        "parameters per MoE layer). Total parameters grow with the routed experts."
    )


# Sections ---------------------------------------------------------------------------------


def _budget_text(summary: dict[str, Any]) -> str:
    budget = summary["budget"]
    if isinstance(budget["steps"], dict) or isinstance(budget["tokens"], dict):
        steps = "Runs had different training budgets (steps and tokens per run in summary.json)."
    else:
        steps = (
            f"Matched budget: every run trained {budget['steps']:,} steps on "
            f"{budget['tokens']:,} tokens."
        )
    active = budget["params_active"]
    low, high = min(active, key=active.get), max(active, key=active.get)
    if active[low] == active[high]:
        params = f"Every variant activates {active[low]:,} parameters per token."
    else:
        params = (
            f"Activated parameters per token range from {active[low]:,} ({low}) to "
            f"{active[high]:,} ({high}), embedding and head included."
        )
    return f"{steps} {params}"


def _method_text(summary: dict[str, Any]) -> str:
    seeds = sorted({row["seeds"] for row in summary["rows"]})
    seeds_text = " or ".join(str(n) for n in seeds)
    return (
        f"Each variant ran {seeds_text} seed(s). The table gives the mean ± sample standard "
        f"deviation over seeds and the {CONFIDENCE:.0%} t-interval of the mean. Differences "
        f"to the baseline `{summary['baseline']}` come with a {CONFIDENCE:.0%} Welch interval "
        f"and a two-sided Welch t-test; p ≥ {ALPHA} reads as within noise. Validation loss "
        "and bits per UTF-8 byte (bpb) cover the whole validation split; bpb compares across "
        "tokenizers."
    )


def summary_section(summary: dict[str, Any], figure_paths: dict[str, Path]) -> Section:
    rows, baseline = summary["rows"], summary["baseline"]
    text = [_budget_text(summary), _method_text(summary)]
    if summary["moe_matching"]:
        text.append(summary["moe_matching"])
    headers, cells = table_cells(rows, baseline)
    table_html = (
        '<table id="summary"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
        + "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells
        )
        + "</tbody></table>"
    )
    return Section(
        title="Summary",
        markdown="\n\n".join([*text, markdown_table(rows, baseline)]),
        html="".join(f"<p>{_inline_code(t)}</p>" for t in text) + table_html,
    )


def figures_section(summary: dict[str, Any], figure_paths: dict[str, Path]) -> Section:
    return Section(
        title="Figures",
        markdown="Loss curves with seed bands, then one bar chart per metric with intervals.",
        html="<p>Loss curves with seed bands, then one bar chart per metric with intervals.</p>",
        figures=[path for name, path in figure_paths.items() if name != "fp8_parity"],
    )


def fp8_parity_section(summary: dict[str, Any], figure_paths: dict[str, Path]) -> Section | None:
    """Build the section that sets each FP8 run against its BF16 twin and the seed noise."""
    rows = summary["fp8_parity"]
    if not rows:
        return None
    text = [
        "Each FP8 run is paired with its BF16 twin: the same variant, seed and data order. The "
        "error is |EMA(FP8 loss) - EMA(BF16 loss)| / EMA(BF16 loss) on the training loss, its "
        "maximum taken after warmup, against DeepSeek-V3's bound of 0.25 %. The noise floor is "
        "the same error between the twin and a BF16 run that differs only in seed.",
    ]
    if any(row["device"] == "cpu" for row in rows):
        text.append(
            "These runs ran on a CPU, which has no FP8 units: the FP8 GEMMs run as FP32 GEMMs "
            "over the E4M3 values, so the step-time ratio is the cost of that emulation, not a "
            "forecast for FP8 hardware."
        )
    table = parity_markdown(rows)
    return Section(
        title="FP8 loss parity",
        markdown="\n\n".join([*text, table]),
        html="".join(f"<p>{html.escape(t)}</p>" for t in text) + _markdown_table_html(table),
        figures=[figure_paths["fp8_parity"]],
    )


def _markdown_table_html(table: str) -> str:
    """Convert a small pipe table (header row, separator, body rows) to HTML."""
    lines = [line.strip("|").split("|") for line in table.splitlines()]
    head, body = lines[0], lines[2:]
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
        + "</tr></thead><tbody>"
        + "".join(
            "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>"
            for row in body
        )
        + "</tbody></table>"
    )


def provenance_section(summary: dict[str, Any], figure_paths: dict[str, Path]) -> Section:
    text = _provenance_text(summary["provenance"])
    return Section(
        title="Provenance",
        markdown=f"```\n{text}\n```",
        html=f"<pre>{html.escape(text)}</pre>",
    )


# The report, in page order; a function returns None to leave its section out.
SECTIONS: list[Callable[[dict[str, Any], dict[str, Path]], Section | None]] = [
    summary_section,
    figures_section,
    fp8_parity_section,
    provenance_section,
]


def _provenance_text(prov: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
    machine = prov["machine"]
    lines = [
        f"git commit: {prov['git_commit']}",
        f"dvc.lock sha256: {prov['dvc_lock_sha256']}",
    ]
    for stage, outs in prov["dvc_lock_outs"].items():
        lines += [f"  {stage}: {path} md5 {md5}" for path, md5 in outs.items()]
    lines += [
        f"packages: {packages}",
        f"machine: {machine['platform']}, {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}",
    ]
    return "\n".join(lines)


# Rendering --------------------------------------------------------------------------------


def _inline_code(text: str) -> str:
    """Escape text for HTML and turn `code` spans into <code> elements."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_markdown(summary: dict[str, Any], sections: list[Section], out: Path) -> str:
    lines = [f"# {summary['title']}", ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.markdown, ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in section.figures]
    return "\n".join(lines)


def _embedded_image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'
    )


def render_html(summary: dict[str, Any], sections: list[Section]) -> str:
    """Render a self-contained page: figures are embedded, so it needs no network or files."""
    title = html.escape(summary["title"])
    body = "".join(
        f"<h2>{html.escape(s.title)}</h2>{s.html}" + "".join(map(_embedded_image, s.figures))
        for s in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: right; }}
th {{ background: #dbe4f0; }} td:first-child {{ text-align: left; font-family: monospace; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 720px; }}
pre {{ background: #f7f7f7; padding: 1em; white-space: pre-wrap; font-size: 0.8em; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""
