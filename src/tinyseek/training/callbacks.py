"""Callbacks that measure throughput and memory and record the metric history."""

from __future__ import annotations

import csv
import io
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from tinyseek.io import write_text


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated bytes on a CUDA device, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return peak if sys.platform == "darwin" else peak * 1024


class ThroughputMonitor(L.Callback):
    """Tokens per second over each logging interval, with time spent in validation left out."""

    def __init__(self, tokens_per_step: int, log_every_n_steps: int):
        self.tokens_per_step = tokens_per_step
        self.log_every_n_steps = log_every_n_steps
        self.train_seconds = 0.0
        self.steps = 0
        self._interval_start: float | None = None
        self._interval_steps = 0
        self._interval_seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._interval_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._interval_start
        self.train_seconds += elapsed
        self.steps += 1
        self._interval_seconds += elapsed
        self._interval_steps += 1
        if trainer.global_step % self.log_every_n_steps == 0:
            tokens_per_s = self._interval_steps * self.tokens_per_step / self._interval_seconds
            pl_module.log("throughput/tokens_per_s", tokens_per_s)
            self._interval_steps, self._interval_seconds = 0, 0.0

    @property
    def mean_tokens_per_s(self) -> float:
        return self.steps * self.tokens_per_step / self.train_seconds if self.train_seconds else 0.0


class MemoryMonitor(L.Callback):
    """Logs memory/peak_bytes at every logging step."""

    def __init__(self, log_every_n_steps: int):
        self.log_every_n_steps = log_every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.log_every_n_steps == 0:
            pl_module.log("memory/peak_bytes", float(peak_memory_bytes(pl_module.device)))


class HistoryWriter(L.Callback):
    """Records logged metrics by step and writes them to history.csv at every validation."""

    def __init__(self, path: str | Path, log_every_n_steps: int):
        self.path = Path(path)
        self.log_every_n_steps = log_every_n_steps
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def _record(self, trainer: L.Trainer, prefix: str) -> None:
        row: dict[str, Any] = {"step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(prefix):
                row[key] = float(value)
        if len(row) > 1:
            self.rows.append(row)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.log_every_n_steps == 0:
            self._record(trainer, prefix=("train/", "throughput/", "memory/", "moe/"))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, prefix="val/")
            if trainer.is_global_zero:
                self.write()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        columns = ["step"] + sorted({key for row in self.rows for key in row} - {"step"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text(self.path, buffer.getvalue())
