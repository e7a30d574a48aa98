"""Per-variant statistics over seeds and the summary table built from them.

A run's variant is its name without the `-s<seed>` suffix, so `mla-dense-fp32-s0` and
`mla-dense-fp32-s1` are two seeds of `mla-dense-fp32`. Each metric below is summarised over
a variant's seeds; the compared ones also get a Welch test against the baseline variant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyseek.reporting.collect import Run
from tinyseek.reporting.stats import Comparison, SeedSummary, summarize, welch_compare

_SEED_SUFFIX = re.compile(r"-s(\d+)$")


def variant_of(run_name: str) -> str:
    """`mla-dense-fp32-s1` -> `mla-dense-fp32`; a name without a seed suffix is kept."""
    return _SEED_SUFFIX.sub("", run_name)


@dataclass(frozen=True)
class Metric:
    """A per-run number the report summarises over seeds (and may plot as a bar chart)."""

    key: str
    label: str
    value: Callable[[Run, dict[str, Run]], float | None]
    """Reads the value from a run; the second argument maps run names to runs, for twins."""
    compare: bool = False
    """Test the difference to the baseline (Welch) and show it in the table."""


def _fp8_loss_error(run: Run, by_name: dict[str, Run]) -> float | None:
    """Relative val-loss error of an FP8 run against its BF16 twin of the same seed."""
    precision = run.metrics.get("axes", {}).get("precision", "")
    if not precision.startswith("fp8_"):
        return None
    twin = by_name.get(run.variant.replace(f"-{precision}-s", "-bf16-s"))
    if twin is None:
        return None
    twin_loss = twin.metrics["val"]["loss"]
    return (run.metrics["val"]["loss"] - twin_loss) / twin_loss


def _nested(*keys: str, scale: float = 1.0) -> Callable[[Run, dict[str, Run]], float | None]:
    def read(run: Run, _: dict[str, Run]) -> float | None:
        node: Any = run.metrics
        for key in keys:
            if not isinstance(node, dict) or node.get(key) is None:
                return None
            node = node[key]
        return node * scale

    return read


# The metrics of the report, in table order. Add one line here for another column.
METRICS = [
    Metric("val_bpb", "val bits per byte", _nested("val", "bpb"), compare=True),
    Metric("val_loss", "val loss (nats/token)", _nested("val", "loss"), compare=True),
    Metric("params_active", "activated parameters", _nested("params", "active")),
    Metric("params_total", "total parameters", _nested("params", "total")),
    Metric(
        "kv_bytes_per_token", "KV-cache bytes per token", _nested("kv_cache", "bytes_per_token")
    ),
    Metric("tokens_per_s", "training tokens/s", _nested("throughput", "tokens_per_s"), True),
    Metric("decode_tokens_per_s", "decode tokens/s", _nested("throughput", "decode_tokens_per_s")),
    Metric("peak_memory_mib", "peak memory (MiB)", _nested("memory", "peak_bytes", scale=2**-20)),
    Metric("device_hours", "device-hours", _nested("cost", "device_hours")),
    Metric("val_maxvio", "MoE val MaxVio", _nested("moe", "val_maxvio")),
    Metric("fp8_loss_error", "FP8 val-loss error vs BF16 twin", _fp8_loss_error),
]
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}


def group_by_variant(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by variant, in the order the variants first appear."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(variant_of(run.variant), []).append(run)
    return groups


def _seed_values(metric: Metric, runs: list[Run], by_name: dict[str, Run]) -> list[float] | None:
    values = [metric.value(run, by_name) for run in runs]
    present = [v for v in values if v is not None]
    return present or None


def variant_rows(runs: list[Run], baseline: str) -> list[dict[str, Any]]:
    """Summarise every metric over each variant's seeds and test the compared ones."""
    groups = group_by_variant(runs)
    baseline = variant_of(baseline)
    if baseline not in groups:
        raise ValueError(
            f"baseline={baseline!r} is not among the variants ({', '.join(groups)}): "
            "pass one of them, without the -s<seed> suffix."
        )
    by_name = {run.variant: run for run in runs}
    base_values = {m.key: _seed_values(m, groups[baseline], by_name) for m in METRICS}

    rows = []
    for variant, members in groups.items():
        stats: dict[str, SeedSummary | None] = {}
        tests: dict[str, Comparison] = {}
        seed_values: dict[str, list[float]] = {}
        for metric in METRICS:
            values = _seed_values(metric, members, by_name)
            stats[metric.key] = summarize(values) if values else None
            if values:
                seed_values[metric.key] = values
            if metric.compare and values and base_values[metric.key]:
                tests[metric.key] = welch_compare(values, base_values[metric.key])
        rows.append(
            {
                "variant": variant,
                "seeds": len(members),
                "runs": [run.variant for run in members],
                "values": seed_values,
                "stats": {k: v.as_dict() if v else None for k, v in stats.items()},
                "vs_baseline": {k: v.as_dict() for k, v in tests.items()},
                "kv_reduction": _kv_reduction(stats, base_values),
            }
        )
    return rows


def _kv_reduction(stats: dict[str, SeedSummary | None], base: dict[str, Any]) -> float | None:
    kv = stats["kv_bytes_per_token"]
    if kv is None or not base["kv_bytes_per_token"]:
        return None
    return base["kv_bytes_per_token"][0] / kv.mean


# Table cells ----------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def _mean_sd(row: dict[str, Any], key: str, fmt: str) -> str:
    stat = row["stats"].get(key)
    if stat is None:
        return "n/a"
    if not stat["std"]:
        return fmt.format(stat["mean"])
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def _interval(row: dict[str, Any], key: str, fmt: str) -> str:
    stat = row["stats"].get(key)
    if stat is None or stat["ci_low"] is None:
        return "n/a"
    return f"[{fmt.format(stat['ci_low'])}, {fmt.format(stat['ci_high'])}]"


def _delta(row: dict[str, Any], key: str, baseline: str) -> str:
    test = row["vs_baseline"].get(key)
    if row["variant"] == baseline:
        return "—"
    if test is None:
        return "n/a"
    text = f"{test['diff']:+.4f}"
    if test["ci_low"] is not None:
        text += f" [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}]"
    return text


def _p_value(row: dict[str, Any], baseline: str) -> str:
    if row["variant"] == baseline:
        return "—"
    return _num(row["vs_baseline"].get("val_bpb", {}).get("p_value"), "{:.3g}")


def _verdict(row: dict[str, Any], baseline: str) -> str:
    """Plain-language reading of the bpb difference: lower bpb is better."""
    if row["variant"] == baseline:
        return "baseline"
    test = row["vs_baseline"].get("val_bpb")
    if test is None or test["p_value"] is None:
        return "untested (one seed)"
    if test["within_noise"]:
        return "within noise"
    return "better" if test["diff"] < 0 else "worse"


def table_columns(baseline: str) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """(header, cell) pairs of the summary table. Add one pair for another column."""
    return [
        ("variant", lambda r: r["variant"]),
        ("seeds", lambda r: str(r["seeds"])),
        ("val bpb (mean ± sd)", lambda r: _mean_sd(r, "val_bpb", "{:.4f}")),
        ("val bpb 95 % CI", lambda r: _interval(r, "val_bpb", "{:.4f}")),
        ("Δ bpb vs baseline [95 % CI]", lambda r: _delta(r, "val_bpb", baseline)),
        ("Welch p", lambda r: _p_value(r, baseline)),
        ("reading", lambda r: _verdict(r, baseline)),
        ("val loss", lambda r: _mean_sd(r, "val_loss", "{:.4f}")),
        ("active params", lambda r: _mean_sd(r, "params_active", "{:,.0f}")),
        ("KV bytes/token", lambda r: _mean_sd(r, "kv_bytes_per_token", "{:,.0f}")),
        ("KV reduction vs baseline", lambda r: _num(r["kv_reduction"], "{:.2f}×")),
        ("train tokens/s", lambda r: _mean_sd(r, "tokens_per_s", "{:,.0f}")),
        ("peak MiB", lambda r: _mean_sd(r, "peak_memory_mib", "{:,.0f}")),
        ("device-hours", lambda r: _mean_sd(r, "device_hours", "{:.4f}")),
        ("val MaxVio", lambda r: _mean_sd(r, "val_maxvio", "{:.3f}")),
        ("FP8 loss error", lambda r: _mean_sd(r, "fp8_loss_error", "{:+.3%}")),
    ]


def table_cells(rows: list[dict[str, Any]], baseline: str) -> tuple[list[str], list[list[str]]]:
    """Headers and cell texts; columns that are n/a in every row are left out."""
    columns = table_columns(variant_of(baseline))
    cells = [[cell(row) for _, cell in columns] for row in rows]
    keep = [i for i in range(len(columns)) if any(line[i] != "n/a" for line in cells)]
    return [columns[i][0] for i in keep], [[line[i] for i in keep] for line in cells]


def markdown_table(rows: list[dict[str, Any]], baseline: str) -> str:
    headers, cells = table_cells(rows, baseline)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)
