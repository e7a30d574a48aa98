"""Run the benchmark suite and write results.json and results.md.

python -m benchmarks.run                                   # default sections, a few minutes
python -m benchmarks.run --sections peers,loop --rounds 7  # a subset, more rounds
python -m benchmarks.run --sizes tiny --precisions fp32,bf16,fp8_blockwise
python -m benchmarks.run --sections compile                # eager against torch.compile
"""

from __future__ import annotations

import argparse
import datetime
import logging
from pathlib import Path
from typing import Any

import torch

from benchmarks import compiled, fp8, loop, mla_decode, peers, train_variants
from benchmarks.common import CONF, environment
from benchmarks.report import render_markdown
from tinyseek.io import write_json, write_text

log = logging.getLogger("benchmarks")

SECTIONS = ("train", "decode", "peers", "loop", "fp8", "compile")
DEFAULT_SECTIONS = ("train", "decode", "peers", "loop", "fp8")
"""compile is opt-in: compiling takes minutes on a busy CPU."""
ATTENTIONS = ("mha", "gqa", "mqa", "mla")
FFNS = ("dense", "moe")


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every attention x FFN x precision variant at each size, one forked process each."""
    rows = []
    for size in args.sizes:
        for precision in args.precisions:
            for attention in ATTENTIONS:
                for ffn in FFNS:
                    log.info("train %s %s-%s-%s", size, attention, ffn, precision)
                    rows.append(
                        train_variants.run_in_subprocess(
                            size, attention, ffn, precision, args.steps
                        )
                    )
    return {"rows": rows}


def run_fp8(args: argparse.Namespace) -> dict[str, Any]:
    """FP8 Linear microbenchmarks and the FP8-over-BF16 step ratio, from benchmarks/fp8.py."""
    return fp8.run(args)


def run_section(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "train":
        return run_train(args)
    if name == "decode":
        rows = []
        for size in args.sizes:
            rows += mla_decode.run(
                size, [1, 8], prompt_tokens=32, new_tokens=64, rounds=args.rounds
            )
        return {"rows": rows}
    if name == "peers":
        precisions = tuple(p for p in args.precisions if p in peers.PRECISIONS)
        if not precisions:
            log.warning("peers run in fp32 or bf16 only; none given, so they run in fp32")
            precisions = ("fp32",)
        rows = []
        for size in args.sizes:
            rows += peers.run(size, 16, 128, args.rounds, args.steps, precisions)
        return {"rows": rows}
    if name == "loop":
        variants = [("mha", "dense"), ("mla", "moe")]
        return {"rows": loop.run(variants, rounds=args.rounds, steps=4 * args.steps)}
    if name == "compile":
        variants = [("mha", "dense"), ("mla", "moe")]
        return {"rows": compiled.run(variants, rounds=args.rounds, steps=args.steps)}
    return run_fp8(args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run tinyseek's speed and memory benchmarks.")
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    parser.add_argument("--sizes", default="tiny,small", help="model presets (conf/model)")
    parser.add_argument("--precisions", default="fp32,bf16", help="precision presets")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; 5 or more give a steady median"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default="benchmarks/results", help="output folder")
    args = parser.parse_args()
    args.sections = args.sections.split(",")
    args.sizes = args.sizes.split(",")
    args.precisions = args.precisions.split(",")
    _check_choices(parser, "--sections", args.sections, SECTIONS)
    _check_choices(parser, "--sizes", args.sizes, _presets("model"))
    _check_choices(parser, "--precisions", args.precisions, _presets("precision"))
    for option, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            parser.error(f"{option}={value} is invalid: give a positive number")
    return args


def _presets(group: str) -> tuple[str, ...]:
    """Names of the Hydra presets in conf/<group>/."""
    return tuple(sorted(path.stem for path in (CONF / group).glob("*.yaml")))


def _check_choices(
    parser: argparse.ArgumentParser, option: str, values: list[str], choices: tuple[str, ...]
) -> None:
    """Stop with a usage error before any work when a comma-separated value is not a choice."""
    unknown = [repr(value) for value in values if value not in choices]
    if unknown:
        parser.error(
            f"{option}: unknown value(s) {', '.join(unknown)}; choose from {', '.join(choices)}"
        )


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "environment": environment(),
    }
    for name in args.sections:
        results[name] = run_section(name, args)
    finished = datetime.datetime.now(datetime.timezone.utc)
    results["wall_s"] = (finished - started).total_seconds()
    results["environment"]["load_average_1m_end"] = environment()["load_average_1m"]

    out = Path(args.out)
    write_json(out / "results.json", results)
    write_text(out / "results.md", render_markdown(results))
    log.info("wrote %s and %s", out / "results.json", out / "results.md")


if __name__ == "__main__":
    main()
