"""Batches of random token windows drawn from the memory-mapped token files."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tinyseek.config import DataConfig
from tinyseek.data.shards import load_meta, load_tokens


class RandomWindows(Dataset):
    """Item i is batch i: batch_size windows of seq_len + 1 tokens at seeded random offsets.

    Each batch draws from its own generator seeded by (stream, seed, i), so the batches do
    not depend on workers or on where a resumed run starts. Streams keep training and
    validation windows independent. Under DDP every rank draws the whole global batch of
    world_size * batch_size offsets and keeps its own slice, so N ranks see exactly the
    windows of one process with an N times larger batch.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_len: int,
        seed: int,
        length: int,
        start: int = 0,
        stream: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tokens = tokens
        self.rank = rank
        self.world_size = world_size
        self.stream = stream
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.length = length
        self.start = start
        self._positions = np.arange(seq_len + 1)[None, :]  # (1, T + 1)

    def __len__(self) -> int:
        # Not length - start: a resumed fit restores the epoch's batch index, so a shorter
        # dataset would end the epoch early and restart at the first item, re-drawing batches.
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        generator = np.random.default_rng([self.stream, self.seed, self.start + index])
        high = len(self.tokens) - self.seq_len - 1
        offsets = generator.integers(0, high + 1, size=self.batch_size * self.world_size)
        offsets = offsets[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        # One gather for the whole batch: offsets (B, 1) + positions (1, T + 1).
        windows = self.tokens[offsets[:, None] + self._positions]  # (B, T + 1)
        return torch.from_numpy(windows.astype(np.int64))


class TokenDataModule(L.LightningDataModule):
    """Training batches of random windows and a fixed sample of validation windows."""

    def __init__(
        self,
        cfg: DataConfig,
        seed: int,
        max_steps: int,
        val_batches: int,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        self.pin_memory = pin_memory
        self.seed = seed
        self.max_steps = max_steps
        self.val_batches = val_batches
        self.meta = load_meta(cfg.dir)
        self.train_tokens = load_tokens(cfg.dir, "train", self.meta)
        self.val_tokens = load_tokens(cfg.dir, "val", self.meta)
        self._check_fits()

    def _check_fits(self) -> None:
        batch_tokens = self.cfg.batch_size * self.cfg.seq_len
        if batch_tokens > len(self.train_tokens):
            raise ValueError(
                f"data.batch_size={self.cfg.batch_size} x data.seq_len={self.cfg.seq_len} = "
                f"{batch_tokens} tokens per batch exceeds the {len(self.train_tokens)} training "
                f"tokens in {self.cfg.dir}: lower data.batch_size or use more text."
            )
        window = self.cfg.seq_len + 1
        for split, tokens in (("train", self.train_tokens), ("val", self.val_tokens)):
            if len(tokens) < window:
                raise ValueError(
                    f"{Path(self.cfg.dir) / split}.bin has {len(tokens)} tokens, fewer than one "
                    f"window of data.seq_len + 1 = {window}: lower data.seq_len or use more text."
                )

    def _shard(self) -> dict[str, int]:
        if self.trainer is None:
            return {"rank": 0, "world_size": 1}
        return {"rank": self.trainer.global_rank, "world_size": self.trainer.world_size}

    def train_dataloader(self) -> DataLoader:
        # A resumed run starts at the restored global step, so it draws the batches that an
        # uninterrupted run would have drawn next.
        start = self.trainer.global_step if self.trainer is not None else 0
        dataset = RandomWindows(
            self.train_tokens,
            self.cfg.batch_size,
            self.cfg.seq_len,
            seed=self.seed,
            length=self.max_steps,
            start=start,
            **self._shard(),
        )
        return self._loader(dataset)

    def val_dataloader(self) -> DataLoader:
        # A fixed seed keeps the sampled validation windows identical at every check.
        dataset = RandomWindows(
            self.val_tokens,
            self.cfg.batch_size,
            self.cfg.seq_len,
            seed=self.seed,
            length=self.val_batches,
            stream=1,
            **self._shard(),
        )
        return self._loader(dataset)

    def _loader(self, dataset: RandomWindows) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            # Workers stay alive across validation checks instead of restarting each time.
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            pin_memory=self.pin_memory,
        )
