"""Markdown tables of a benchmark results.json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MIB = 2**20

Column = tuple[str, Callable[[dict[str, Any]], str]]
"""A table column: its header and the function that formats its cell from a result row."""


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """Render a markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _train(section: dict[str, Any]) -> str:
    header = ["size", "variant", "precision", "tokens/s", "step ms", "MFU", "peak GFLOP/s"]
    header.append("peak RSS MiB (added)")
    rows = []
    for r in section["rows"]:
        variant = f"{r['attention']}-{r['ffn']}"
        if "error" in r:
            failed = "failed: " + " ".join(r["error"].split())  # one line per table cell
            rows.append([r["size"], variant, r["precision"], failed, "", "", "", ""])
            continue
        rows.append(
            [
                r["size"],
                variant,
                r["precision"],
                f"{r['tokens_per_s']:.0f}",
                f"{r['step_s_median'] * 1e3:.1f}",
                f"{r['mfu']:.1%}",
                f"{r['peak_flops_measured'] / 1e9:.0f}",
                f"{r['peak_rss_bytes'] / MIB:.0f} ({r['peak_rss_above_start_bytes'] / MIB:.0f})",
            ]
        )
    note = (
        "MFU divides by the square-matmul rate measured in the same process right after the "
        "variant's steps (FP32 for fp32, BF16 otherwise)."
    )
    return note + "\n\n" + markdown_table(header, rows)


def _column_table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    """Render one markdown row per result row, one cell per (header, format) column."""
    header = [name for name, _ in columns]
    return markdown_table(header, [[cell(row) for _, cell in columns] for row in rows])


DECODE_COLUMNS: list[Column] = [
    ("size", lambda r: r["size"]),
    ("batch", lambda r: str(r["batch_size"])),
    ("naive tok/s", lambda r: f"{r['naive_tokens_per_s']:.0f}"),
    ("absorbed tok/s", lambda r: f"{r['absorbed_tokens_per_s']:.0f}"),
    ("absorbed/naive", lambda r: f"{r['absorbed_over_naive']:.2f}x"),
    (
        "KV B/token",
        lambda r: f"{r['naive_kv_bytes_per_token']:.0f} -> {r['absorbed_kv_bytes_per_token']:.0f}",
    ),
]
PEERS_COLUMNS: list[Column] = [
    ("size", lambda r: r["size"]),
    ("variant", lambda r: r["variant"]),
    ("precision", lambda r: r.get("precision", "fp32")),
    ("peer", lambda r: r["peer"]),
    ("params (tinyseek / HF)", lambda r: f"{r['params_tinyseek']:,} / {r['params_hf']:,}"),
    ("tinyseek tok/s", lambda r: f"{r['tinyseek']['tokens_per_s']:.0f}"),
    ("HF tok/s", lambda r: f"{r['hf']['tokens_per_s']:.0f}"),
    ("tinyseek/HF", lambda r: f"{r['speedup']:.2f}x"),
]
LOOP_COLUMNS: list[Column] = [
    ("variant", lambda r: r["variant"]),
    ("batch x seq", lambda r: f"{r['batch_size']} x {r['seq_len']}"),
    ("Lightning ms", lambda r: f"{r['lightning_step_s'] * 1e3:.1f}"),
    ("bare loop ms", lambda r: f"{r['bare_step_s'] * 1e3:.1f}"),
    ("Lightning/bare", lambda r: f"{r['lightning_over_bare']:.2f}x"),
]
COMPILE_COLUMNS: list[Column] = [
    ("variant", lambda r: r["variant"]),
    ("compile s", lambda r: f"{r['compile_s']:.0f}"),
    ("eager tok/s", lambda r: f"{r['eager']['tokens_per_s']:.0f}"),
    ("compiled tok/s", lambda r: f"{r['compiled']['tokens_per_s']:.0f}"),
    ("compiled/eager", lambda r: f"{r['compiled_speedup']:.2f}x"),
]


def _fp8(section: dict[str, Any]) -> str:
    if "skipped" in section:
        return f"Skipped: {section['skipped']}."
    rows = section.get("rows", [])
    if not rows:
        return "No rows."
    header = list(rows[0])
    return markdown_table(header, [[str(r.get(key, "")) for key in header] for r in rows])


RENDERERS = {
    "train": ("Training throughput, MFU and memory", _train),
    "decode": (
        "MLA decoding: naive against absorbed",
        lambda section: _column_table(section["rows"], DECODE_COLUMNS),
    ),
    "peers": (
        "Forward + backward against Hugging Face transformers",
        lambda section: _column_table(section["rows"], PEERS_COLUMNS),
    ),
    "loop": (
        "Lightning step against a bare PyTorch loop",
        lambda section: _column_table(section["rows"], LOOP_COLUMNS),
    ),
    "fp8": ("FP8", _fp8),
    "compile": (
        "compile=true against eager",
        lambda section: _column_table(section["rows"], COMPILE_COLUMNS),
    ),
}


def render_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    settings = results["settings"]
    parts = [
        "# tinyseek benchmark results",
        "",
        f"Run {results['started']} in {results['wall_s']:.0f} s on {env['platform']} "
        f"({env['cpu_count']} CPUs, {env['torch_threads']} torch threads, 1-minute load "
        f"{env['load_average_1m']:.1f} at start and {env['load_average_1m_end']:.1f} at end); "
        f"torch {env['torch']}, lightning {env['lightning']}, transformers "
        f"{env['transformers']}. Timings are medians of {settings['rounds']} interleaved "
        f"rounds of {settings['steps']} steps unless a table says otherwise.",
    ]
    for name, (title, render) in RENDERERS.items():
        if name in results:
            parts += ["", f"## {title}", "", render(results[name])]
    return "\n".join(parts) + "\n"
