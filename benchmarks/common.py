"""Shared pieces of the benchmarks: composed configs, random batches, timing and statistics."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from tinyseek.config import ModelConfig, TrainConfig, register_configs, to_object

CONF = Path(__file__).resolve().parents[1] / "conf"
VOCAB_SIZE = 2048
"""Vocabulary of the benchmark models: the default BPE size, so the head costs what it does."""

register_configs()


def train_config(overrides: list[str]) -> TrainConfig:
    """Compose conf/train.yaml with overrides, as pipelines/train.py does, and validate it."""
    base = [f"model.vocab_size={VOCAB_SIZE}", "logger=none"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=base + overrides)
    return to_object(cfg)


def model_config(size: str, attention: str, ffn: str) -> ModelConfig:
    return train_config([f"model={size}", f"attention={attention}", f"ffn={ffn}"]).model


def random_batch(batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Token windows (B, T + 1) drawn uniformly from the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB_SIZE, (batch_size, seq_len + 1), generator=generator)


def time_steps(step: Callable[[], None], steps: int, warmup: int = 2) -> float:
    """Seconds per call of step, averaged over `steps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def interleave(
    candidates: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Time each candidate once per round, in turn (A B A B ...); seconds per step per round.

    Interleaving exposes every candidate to the same drift in machine load, so the ratio
    of their medians is steadier than either absolute number.
    """
    for step in candidates.values():
        time_steps(step, steps=warmup, warmup=0)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, step in candidates.items():
            times[name].append(time_steps(step, steps, warmup=0))
    return times


def summarise_times(seconds: list[float], tokens_per_step: int) -> dict[str, float]:
    """Median step time, its spread and the median tokens per second of per-round timings."""
    median = statistics.median(seconds)
    return {
        "step_s_median": median,
        "step_s_min": min(seconds),
        "step_s_max": max(seconds),
        "tokens_per_s": tokens_per_step / median,
        "rounds": len(seconds),
    }


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios numerator / denominator (paired by round)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def environment() -> dict[str, object]:
    """Facts that numbers measured on this machine depend on."""
    import lightning
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "load_average_1m": os.getloadavg()[0],
    }
