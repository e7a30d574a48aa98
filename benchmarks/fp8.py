"""FP8 on this machine: Linear microbenchmarks per recipe and the training-step ratio to BF16.

    python -m benchmarks.fp8                     # markdown tables on stdout
    python -m benchmarks.run --sections fp8      # the same rows inside the suite's results

Every comparison interleaves its contenders (A B C D A B C D ...) and reports the median, so
a shared, noisy machine slows all of them alike. On a CPU without FP8 units torch._scaled_mm
emulates the FP8 GEMMs, so ratios above 1 are the cost of emulation, not a forecast for FP8
hardware.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.common import interleave, random_batch, train_config
from benchmarks.report import markdown_table
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
TRAIN_CASES = [  # (label, overrides of conf/train.yaml)
    ("small mha-dense", ["model=small", "attention=mha", "ffn=dense"]),
    ("small mla-moe", ["model=small", "attention=mla", "ffn=moe"]),
    # Twice as wide, so GEMMs take a larger share of the step than in the small model.
    ("4 layers x 256 wide mha-dense", ["model=small", "model.dim=256", "model.inter_dim=768"]),
]


def _fp8_copy(module: nn.Module, recipe: str, tile: int) -> nn.Module:
    """Copy module deeply and convert the copy to recipe (bf16 leaves it as it is)."""
    module = copy.deepcopy(module)
    if isinstance(module, nn.Sequential) and recipe == "blockwise":
        # A bare Linear has no name convert_to_fp8 would keep in high precision.
        module[0] = Float8BlockwiseLinear.from_linear(module[0], tile)
    elif recipe != "bf16":
        convert_to_fp8(module, recipe, tile)
    return module


def _linear_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one Linear under BF16 autocast, the FP8 runs' setting."""

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().sum().backward()

    return step


def _train_step(model: nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    """Build one AdamW step of next-token prediction under BF16 autocast."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _row(benchmark: str, times: dict[str, list[float]]) -> dict[str, Any]:
    medians = {recipe: statistics.median(values) for recipe, values in times.items()}
    row: dict[str, Any] = {"benchmark": benchmark}
    row |= {f"{r} ms": round(1e3 * medians[r], 2) for r in RECIPES}
    row |= {f"{r}/bf16": round(medians[r] / medians["bf16"], 2) for r in RECIPES[1:]}
    return row


def bench_linears(rounds: int, tile: int) -> list[dict[str, Any]]:
    """Forward + backward of one Linear per recipe at several GEMM shapes."""
    rows = []
    for tokens, k, n in LINEAR_SHAPES:
        torch.manual_seed(0)
        linear = nn.Sequential(nn.Linear(k, n, bias=False))
        x = torch.randn(tokens, k, requires_grad=True)
        steps = {r: _linear_step(_fp8_copy(linear, r, tile), x) for r in RECIPES}
        rows.append(_row(f"Linear {tokens}x{k} @ {k}x{n}", interleave(steps, rounds, steps=3)))
    return rows


def bench_training(rounds: int, tile: int) -> list[dict[str, Any]]:
    """Training step of each case per recipe; all copies start from the same weights."""
    rows = []
    for label, overrides in TRAIN_CASES:
        cfg = train_config(overrides).model
        torch.manual_seed(0)
        base = Transformer(cfg)
        batch = random_batch(16, 128)
        steps = {r: _train_step(_fp8_copy(base, r, tile), batch) for r in RECIPES}
        rows.append(_row(f"train step {label}, 16x128 tokens", interleave(steps, rounds, steps=2)))
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the suite's fp8 section: Linear rows, then training-step rows."""
    tile = getattr(args, "tile", 128)
    return {"rows": bench_linears(args.rounds, tile) + bench_training(args.rounds, tile)}


def markdown(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    return markdown_table(header, [[str(row[key]) for key in header] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--tile", type=int, default=128, help="blockwise tile")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads (default: torch's own choice)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.rounds} rounds\n")
    print(markdown(run(args)["rows"]))


if __name__ == "__main__":
    main()
