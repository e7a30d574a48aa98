"""The summary table: one row per variant, compared with a baseline variant."""

from __future__ import annotations

from typing import Any

from tinyseek.reporting.collect import Run

# (key, header, format) for each column of the Markdown and HTML tables.
COLUMNS = [
    ("variant", "variant", "{}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("val_bpb", "val bpb", "{:.4f}"),
    ("delta_bpb", "Δ bpb vs baseline", "{:+.4f}"),
    ("params", "params", "{:,}"),
    ("params_active", "active params", "{:,}"),
    ("kv_bytes_per_token", "KV bytes/token", "{:,}"),
    ("kv_reduction", "KV reduction vs MHA", "{:.2f}×"),
    ("tokens_per_s", "train tokens/s", "{:,.0f}"),
    ("decode_tokens_per_s", "decode tokens/s", "{:,.0f}"),
    ("peak_memory_mib", "peak memory (MiB)", "{:,.0f}"),
    ("device_hours", "device-hours", "{:.4f}"),
    ("val_maxvio", "val MaxVio", "{:.3f}"),
]


def summary_rows(runs: list[Run], baseline: str) -> list[dict[str, Any]]:
    """Rows of the summary table; values are exact copies of, or ratios of, metrics.json values."""
    by_name = {run.variant: run for run in runs}
    if baseline not in by_name:
        raise ValueError(f"baseline={baseline!r} is not among the runs ({', '.join(by_name)}).")
    base = by_name[baseline].metrics
    rows = []
    for run in runs:
        m = run.metrics
        rows.append(
            {
                "variant": run.variant,
                "val_loss": m["val"]["loss"],
                "val_bpb": m["val"]["bpb"],
                "delta_bpb": m["val"]["bpb"] - base["val"]["bpb"],
                "params": m["params"]["total"],
                "params_active": m["params"]["active"],
                "kv_bytes_per_token": m["kv_cache"]["bytes_per_token"],
                "kv_reduction": base["kv_cache"]["bytes_per_token"]
                / m["kv_cache"]["bytes_per_token"],
                "tokens_per_s": m["throughput"]["tokens_per_s"],
                "decode_tokens_per_s": m["throughput"]["decode_tokens_per_s"],
                "peak_memory_mib": m["memory"]["peak_bytes"] / 2**20,
                "device_hours": m["cost"]["device_hours"],
                "val_maxvio": m["moe"]["val_maxvio"] if "moe" in m else None,
            }
        )
    return rows


def format_cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in COLUMNS) + " |"
    body = [
        "| " + " | ".join(format_cell(row[key], fmt) for key, _, fmt in COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join([header, rule, *body])
