"""FP8 on this machine: Linear microbenchmarks per recipe and the training-step ratio to BF16.

    python benchmarks/fp8.py                 # markdown tables on stdout
    python benchmarks/fp8.py --json out.json # also the raw numbers

Every comparison interleaves its contenders (A B C A B C ...) and reports the median, so a
shared, noisy machine slows all of them alike. On a CPU without FP8 units the FP8 GEMMs are
emulated by torch._scaled_mm, so ratios above 1 are the cost of emulation, not a prediction
for FP8 hardware.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyseek.config import ModelConfig
from tinyseek.model import Transformer
from tinyseek.precision import Float8BlockwiseLinear, convert_to_fp8

RECIPES = ("bf16", "tensorwise", "rowwise", "blockwise")
LINEAR_SHAPES = [  # (tokens, in_features, out_features)
    (2048, 128, 128),
    (2048, 128, 384),
    (2048, 384, 128),
    (4096, 512, 512),
    (4096, 1024, 1024),
]


def interleaved_medians(
    contenders: dict[str, Callable[[], None]], repeats: int
) -> dict[str, float]:
    """Median seconds per call of each contender, timed in turn after one warm-up call each."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def fp8_linear(recipe: str, linear: nn.Linear, tile: int) -> nn.Module:
    """A copy of linear converted to recipe (bf16 leaves it as it is)."""
    module = nn.Sequential(copy.deepcopy(linear))
    if recipe == "blockwise":
        module[0] = Float8BlockwiseLinear.from_linear(module[0], tile)
    elif recipe != "bf16":
        convert_to_fp8(module, recipe)
    return module


def linear_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one Linear under BF16 autocast (the FP8 runs' setting)."""

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().sum().backward()

    return step


def bench_linears(repeats: int, tile: int) -> list[dict]:
    rows = []
    for tokens, k, n in LINEAR_SHAPES:
        torch.manual_seed(0)
        linear = nn.Linear(k, n, bias=False)
        x = torch.randn(tokens, k, requires_grad=True)
        contenders = {r: linear_step(fp8_linear(r, linear, tile), x) for r in RECIPES}
        medians = interleaved_medians(contenders, repeats)
        rows.append(
            {
                "shape": f"{tokens}x{k} @ {k}x{n}",
                **{f"{r}_ms": 1e3 * medians[r] for r in RECIPES},
                **{f"{r}_vs_bf16": medians[r] / medians["bf16"] for r in RECIPES[1:]},
            }
        )
    return rows


def train_step(model: nn.Module, optimizer, batch: torch.Tensor) -> Callable[[], None]:
    """One optimiser step of next-token prediction under BF16 autocast."""

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_training(repeats: int, attention: str, batch_size: int, seq_len: int) -> dict:
    """Step time of the small model per recipe; all copies start from the same weights."""
    cfg = ModelConfig(
        name="small", dim=128, n_layers=4, n_heads=8, inter_dim=384, vocab_size=2048,
        attention=attention, n_kv_heads=2 if attention == "gqa" else None,
    )  # fmt: skip
    torch.manual_seed(0)
    base = Transformer(cfg)
    batch = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1))
    contenders = {}
    for recipe in RECIPES:
        model = copy.deepcopy(base)
        if recipe != "bf16":
            convert_to_fp8(model, recipe, tile=128)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        contenders[recipe] = train_step(model, optimizer, batch)
    medians = interleaved_medians(contenders, repeats)
    return {
        "model": f"small {attention} dense, batch {batch_size}x{seq_len}",
        **{f"{r}_ms": 1e3 * medians[r] for r in RECIPES},
        **{f"{r}_vs_bf16": medians[r] / medians["bf16"] for r in RECIPES[1:]},
    }


def markdown(rows: list[dict], first: str) -> str:
    header = [first, *(f"{r} ms" for r in RECIPES), *(f"{r}/bf16" for r in RECIPES[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row[first]]
        cells += [f"{row[f'{r}_ms']:.2f}" for r in RECIPES]
        cells += [f"{row[f'{r}_vs_bf16']:.2f}x" for r in RECIPES[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per contender")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--json", help="write the raw numbers to this file")
    args = parser.parse_args()

    linears = bench_linears(args.repeats, args.tile)
    steps = [bench_training(args.repeats, attention, 16, 128) for attention in ("mha", "mla")]

    print(
        f"# FP8 on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved calls\n"
    )
    print("## Linear forward + backward (BF16 autocast)\n")
    print(markdown(linears, "shape"))
    print("\n## Training step of the small model\n")
    print(markdown(steps, "model"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"linear": linears, "train_step": steps}, f, indent=2)


if __name__ == "__main__":
    main()
