"""Checkpoints: atomic writes, a check before resuming, and the RNG state a resume restores."""

from __future__ import annotations

import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinyseek.io import atomic_path
from tinyseek.training.guard import TrainingFault

log = logging.getLogger(__name__)

# Entries that Lightning needs to continue a fit where it stopped.
_RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step")


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used to resume."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file beside the target, then rename onto it.

    A crash or a failed write (a full disk, say) leaves the previous checkpoint intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any = None
    ) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as err:
            raise TrainingFault(
                f"writing checkpoint {path} failed at step {checkpoint.get('global_step')}: "
                f"{err}. The previous checkpoint at that path is unchanged. Free disk space "
                "(or fix the folder's permissions), then run the same command to resume."
            ) from err


def check_checkpoint(path: Path) -> tuple[int, dict[str, Any] | None]:
    """Load a checkpoint to prove it is complete; return its global step and run identity.

    Raises CheckpointError naming the path when the file is truncated, corrupt or lacks
    what a resume needs, so a damaged run is never silently restarted from scratch. The
    identity is None for checkpoints written without a RunIdentity callback.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({err}). Move it away to resume from "
            "an older copy, or set resume=false to train this run_dir from scratch."
        ) from err
    missing = [key for key in _RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {', '.join(missing)}, so it cannot resume a fit. Move it "
            "away, or set resume=false to train this run_dir from scratch."
        )
    identity = checkpoint.get("callbacks", {}).get(RunIdentity.__qualname__)
    return int(checkpoint["global_step"]), identity


def remove_stale_temporaries(checkpoint_dir: Path) -> None:
    """Delete temporary files that a killed save left beside the checkpoints."""
    for tmp in checkpoint_dir.glob(".*.tmp"):
        log.info("removing %s, left by an interrupted checkpoint write", tmp)
        tmp.unlink(missing_ok=True)


class RngState(L.Callback):
    """Saves the Python, NumPy and torch RNG states in each checkpoint and restores them.

    Batches are drawn from per-step generators, so today's model needs no global RNG; this
    keeps a resume exact once anything random (dropout, sampling) is added.
    """

    def state_dict(self) -> dict[str, Any]:
        # Plain lists and tensors only, so Lightning's weights_only loading accepts them.
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        kind, keys, position, has_gauss, cached_gaussian = state_dict["numpy"]
        keys = np.asarray(keys, dtype=np.uint32)
        np.random.set_state((kind, keys, position, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class FinalCheckpoint(L.Callback):
    """Saves last.ckpt when training reaches max_steps, before the loggers finalise."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank calls this; the strategy writes on rank zero only.
        trainer.save_checkpoint(self.path)


class RunIdentity(L.Callback):
    """Stores what a resume must match (config keys, code version) in each checkpoint."""

    def __init__(self, identity: dict[str, Any]):
        self.identity = identity

    def state_dict(self) -> dict[str, Any]:
        return self.identity

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The current identity stays: find_resume_checkpoint already compared the two.
        pass
