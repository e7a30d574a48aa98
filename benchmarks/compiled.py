"""Effect of compile=true: an eager training step against the torch.compile'd one."""

from __future__ import annotations

import time

import torch

from benchmarks.common import interleave, median_ratio, random_batch, summarise_times, train_config
from tinyseek.config import OptimConfig
from tinyseek.training.module import LanguageModel


def _training_step(module: LanguageModel, batch: torch.Tensor):
    optimizer = module.configure_optimizers()["optimizer"]

    def step() -> None:
        loss = module.loss(batch)
        if module.moe_layers:
            loss = loss + module.model.aux_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run(variants: list[tuple[str, str]], rounds: int, steps: int) -> list[dict]:
    """Eager against compiled step time at the tiny size, interleaved, one row per variant."""
    rows = []
    for attention, ffn in variants:
        cfg = train_config(["experiment=tiny", f"attention={attention}", f"ffn={ffn}"])
        batch = random_batch(cfg.data.batch_size, cfg.data.seq_len)
        steps_by_mode = {}
        for mode in ("eager", "compiled"):
            torch.manual_seed(0)
            module = LanguageModel(cfg.model, OptimConfig(), 1000, 1.0, compile=mode == "compiled")
            steps_by_mode[mode] = _training_step(module, batch)
        started = time.perf_counter()
        steps_by_mode["compiled"]()  # the first call compiles
        compile_s = time.perf_counter() - started
        times = interleave(steps_by_mode, rounds=rounds, steps=steps)
        tokens = cfg.data.batch_size * cfg.data.seq_len
        rows.append(
            {
                "variant": f"tiny {attention}-{ffn}",
                "compile_s": compile_s,
                "eager": summarise_times(times["eager"], tokens),
                "compiled": summarise_times(times["compiled"], tokens),
                "compiled_speedup": median_ratio(times["eager"], times["compiled"]),
            }
        )
    return rows
