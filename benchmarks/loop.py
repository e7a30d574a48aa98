"""A tiny training step through Lightning against the same model stepped by a bare loop.

Both sides train the same LanguageModel (same optimiser, schedule, clipping and MoE bias
step) on the same batches. The Lightning side runs the callbacks that pipelines/train.py
installs (throughput, memory and history), with no logger or checkpoint.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import VOCAB_SIZE, train_config
from tinyseek.data.datamodule import RandomWindows
from tinyseek.training.callbacks import HistoryWriter, MemoryMonitor, ThroughputMonitor
from tinyseek.training.module import LanguageModel, update_biases
from tinyseek.training.run import quiet_known_warnings

log = logging.getLogger(__name__)


class StepClock(L.Callback):
    """Time stamps at the end of every training batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())


def _loader(tokens: np.ndarray, batch_size: int, seq_len: int, steps: int) -> DataLoader:
    dataset = RandomWindows(tokens, batch_size, seq_len, seed=0, length=steps)
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0)


def lightning_seconds_per_step(
    module: LanguageModel, loader: DataLoader, warmup: int, log_every: int, folder: Path
) -> float:
    clock = StepClock()
    tokens_per_step = loader.dataset.batch_size * loader.dataset.seq_len
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(loader),
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=log_every,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
        callbacks=[
            ThroughputMonitor(tokens_per_step, log_every),
            MemoryMonitor(log_every),
            HistoryWriter(folder / "history.csv", log_every),
            clock,
        ],
    )
    trainer.fit(module, train_dataloaders=loader)
    timed = clock.stamps[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def bare_seconds_per_step(module: LanguageModel, loader: DataLoader, warmup: int) -> float:
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    stamps = []
    for batch in loader:
        loss = module.loss(batch)
        if module.moe_layers:
            loss = loss + module.model.aux_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), module.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if module.moe_layers:
            counts = torch.stack([moe.train_counts for moe in module.moe_layers])
            update_biases(module.moe_layers, counts, module.model.cfg.bias_update_speed)
            torch._foreach_zero_([moe.train_counts for moe in module.moe_layers])
        stamps.append(time.perf_counter())
    timed = stamps[warmup - 1 :]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def run(variants: list[tuple[str, str]], rounds: int, steps: int, warmup: int = 3) -> list[dict]:
    """Lightning over bare-loop step time at the tiny size, interleaved, one row per variant."""
    quiet_known_warnings()
    warnings.filterwarnings("ignore", message=".*train_dataloader.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows = []
    for attention, ffn in variants:
        cfg = train_config(["experiment=tiny", f"attention={attention}", f"ffn={ffn}"])
        tokens = np.random.default_rng(0).integers(0, VOCAB_SIZE, 200_000).astype(np.uint16)
        loader = _loader(tokens, cfg.data.batch_size, cfg.data.seq_len, warmup + steps)
        modules = {}
        for side in ("lightning", "bare"):
            torch.manual_seed(cfg.seed)
            modules[side] = LanguageModel(cfg.model, cfg.optim, warmup + steps, 1.0)
        times: dict[str, list[float]] = {"lightning": [], "bare": []}
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(rounds):
                times["lightning"].append(
                    lightning_seconds_per_step(
                        modules["lightning"],
                        loader,
                        warmup,
                        cfg.trainer.log_every_n_steps,
                        Path(folder),
                    )
                )
                times["bare"].append(bare_seconds_per_step(modules["bare"], loader, warmup))
        rows.append(
            {
                "variant": f"tiny {attention}-{ffn}",
                "batch_size": cfg.data.batch_size,
                "seq_len": cfg.data.seq_len,
                "steps_per_round": steps,
                "rounds": rounds,
                "lightning_step_s": statistics.median(times["lightning"]),
                "bare_step_s": statistics.median(times["bare"]),
                "lightning_over_bare": statistics.median(
                    lt / b for lt, b in zip(times["lightning"], times["bare"], strict=True)
                ),
            }
        )
    return rows
