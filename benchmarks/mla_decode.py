"""MLA cached decoding: naive (full per-head keys and values) against absorbed (latent only)."""

from __future__ import annotations

import contextlib
import statistics

import torch

from benchmarks.common import VOCAB_SIZE, model_config
from tinyseek.evaluation.decode import measure_decoding
from tinyseek.model import Transformer
from tinyseek.sizing import kv_cache_bytes_per_token


def run(
    size: str, batch_sizes: list[int], prompt_tokens: int, new_tokens: int, rounds: int
) -> list[dict]:
    """Decode tokens/s and KV bytes per token of both paths, interleaved, per batch size."""
    cfg = model_config(size, "mla", "dense")
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for batch_size in batch_sizes:
        prompt = torch.randint(0, VOCAB_SIZE, (batch_size, prompt_tokens), generator=generator)
        speeds: dict[str, list[float]] = {"naive": [], "absorbed": []}
        stats = {}
        for _ in range(rounds):
            for path in speeds:
                stats[path] = measure_decoding(
                    model,
                    prompt,
                    new_tokens,
                    cache_dtype=torch.float32,
                    autocast=contextlib.nullcontext(),
                    absorbed=path == "absorbed",
                )
                speeds[path].append(stats[path].tokens_per_s)
        rows.append(
            {
                "size": size,
                "batch_size": batch_size,
                "prompt_tokens": prompt_tokens,
                "new_tokens": new_tokens,
                "rounds": rounds,
                **{
                    f"{path}_tokens_per_s": statistics.median(values)
                    for path, values in speeds.items()
                },
                "absorbed_over_naive": statistics.median(
                    a / n for a, n in zip(speeds["absorbed"], speeds["naive"], strict=True)
                ),
                **{
                    f"{path}_kv_bytes_per_token": stats[path].kv_bytes_per_token_measured
                    for path in speeds
                },
                "absorbed_kv_bytes_per_token_analytic": kv_cache_bytes_per_token(
                    cfg, torch.float32, absorbed=True
                ),
                "naive_kv_bytes_per_token_analytic": kv_cache_bytes_per_token(
                    cfg, torch.float32, absorbed=False
                ),
            }
        )
    return rows
