"""Markdown tables of a benchmark results.json."""

from __future__ import annotations

from typing import Any

MIB = 2**20


def _table(header: list[str], rows: list[list[str]]) -> str:
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
    return note + "\n\n" + _table(header, rows)


def _decode(section: dict[str, Any]) -> str:
    header = ["size", "batch", "naive tok/s", "absorbed tok/s", "absorbed/naive", "KV B/token"]
    rows = [
        [
            r["size"],
            str(r["batch_size"]),
            f"{r['naive_tokens_per_s']:.0f}",
            f"{r['absorbed_tokens_per_s']:.0f}",
            f"{r['absorbed_over_naive']:.2f}x",
            f"{r['naive_kv_bytes_per_token']:.0f} -> {r['absorbed_kv_bytes_per_token']:.0f}",
        ]
        for r in section["rows"]
    ]
    return _table(header, rows)


def _peers(section: dict[str, Any]) -> str:
    header = ["size", "variant", "precision", "peer", "params (tinyseek / HF)", "tinyseek tok/s"]
    header.append("HF tok/s")
    header.append("tinyseek/HF")
    rows = [
        [
            r["size"],
            r["variant"],
            r.get("precision", "fp32"),
            r["peer"],
            f"{r['params_tinyseek']:,} / {r['params_hf']:,}",
            f"{r['tinyseek']['tokens_per_s']:.0f}",
            f"{r['hf']['tokens_per_s']:.0f}",
            f"{r['speedup']:.2f}x",
        ]
        for r in section["rows"]
    ]
    return _table(header, rows)


def _loop(section: dict[str, Any]) -> str:
    header = ["variant", "batch x seq", "Lightning ms", "bare loop ms", "Lightning/bare"]
    rows = [
        [
            r["variant"],
            f"{r['batch_size']} x {r['seq_len']}",
            f"{r['lightning_step_s'] * 1e3:.1f}",
            f"{r['bare_step_s'] * 1e3:.1f}",
            f"{r['lightning_over_bare']:.2f}x",
        ]
        for r in section["rows"]
    ]
    return _table(header, rows)


def _fp8(section: dict[str, Any]) -> str:
    if "skipped" in section:
        return f"Skipped: {section['skipped']}."
    rows = section.get("rows", [])
    if not rows:
        return "No rows."
    header = list(rows[0])
    return _table(header, [[str(r.get(key, "")) for key in header] for r in rows])


def _compile(section: dict[str, Any]) -> str:
    header = ["variant", "compile s", "eager tok/s", "compiled tok/s", "compiled/eager"]
    rows = [
        [
            r["variant"],
            f"{r['compile_s']:.0f}",
            f"{r['eager']['tokens_per_s']:.0f}",
            f"{r['compiled']['tokens_per_s']:.0f}",
            f"{r['compiled_speedup']:.2f}x",
        ]
        for r in section["rows"]
    ]
    return _table(header, rows)


RENDERERS = {
    "train": ("Training throughput, MFU and memory", _train),
    "decode": ("MLA decoding: naive against absorbed", _decode),
    "peers": ("Forward + backward against Hugging Face transformers", _peers),
    "loop": ("Lightning step against a bare PyTorch loop", _loop),
    "fp8": ("FP8", _fp8),
    "compile": ("compile=true against eager", _compile),
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
