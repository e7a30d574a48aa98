"""Numerical guard: stop (or skip) on non-finite losses and gradients, stop on loss spikes."""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import torch

from tinyseek.config import GuardConfig

log = logging.getLogger(__name__)


class TrainingFault(RuntimeError):
    """Training stopped on a fault; the last good checkpoint is left in place."""


class NumericalGuard(L.Callback):
    """Checks every step's loss before backward and every gradient before the optimiser step.

    A NaN or Inf loss or gradient stops the run with the step and the tensor's name. With
    skip_nonfinite set, the step's gradients are dropped instead, so the optimiser leaves
    the weights alone, and the step is counted in guard/skipped_steps. A finite loss above
    spike_factor times the mean of the last spike_window losses also stops the run. The
    check runs before the optimiser step, so no checkpoint ever contains the faulty update.

    In distributed runs the loss is averaged over ranks first, so every rank takes the same
    decision and none is left waiting in a collective.
    """

    def __init__(self, cfg: GuardConfig, checkpoint_path: str | Path):
        self.cfg = cfg
        self.checkpoint_path = Path(checkpoint_path)
        self.recent_losses: deque[float] = deque(maxlen=cfg.spike_window)
        self.skipped_steps = 0
        self.last_checkpoint_step: int | None = None
        self._skip_this_step = False

    def state_dict(self) -> dict[str, Any]:
        return {"recent_losses": list(self.recent_losses), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.recent_losses.extend(state_dict["recent_losses"])
        self.skipped_steps = state_dict["skipped_steps"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            self.last_checkpoint_step = trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.last_checkpoint_step = checkpoint["global_step"]

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not self.cfg.enabled:
            return
        self._skip_this_step = False
        mean_loss = float(trainer.strategy.reduce(loss.detach().float(), reduce_op="mean"))
        step = trainer.global_step
        if not math.isfinite(mean_loss):
            self._on_nonfinite(f"loss ({mean_loss})", step)
            return

        # Spike check against the recent average; the window fills before it applies.
        factor = self.cfg.spike_factor
        if factor > 0 and len(self.recent_losses) == self.recent_losses.maxlen:
            average = sum(self.recent_losses) / len(self.recent_losses)
            if mean_loss > factor * average:
                raise TrainingFault(
                    f"loss spike at step {step}: {mean_loss:.4g} is more than "
                    f"guard.spike_factor={factor:g} times the mean {average:.4g} of the last "
                    f"{len(self.recent_losses)} steps. {self._checkpoint_note()} Lower optim.lr "
                    "or raise guard.spike_factor (0 disables the spike check)."
                )
        self.recent_losses.append(mean_loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.cfg.enabled:
            return
        if not self._skip_this_step:
            bad = _nonfinite_gradients(pl_module)
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                self._on_nonfinite(f"gradient of {bad[0]}{more}", trainer.global_step)
        if self._skip_this_step:
            # AdamW skips parameters whose gradient is None, so the weights stay as they were.
            optimizer.zero_grad(set_to_none=True)
            pl_module.log("guard/skipped_steps", float(self.skipped_steps))

    def _on_nonfinite(self, what: str, step: int) -> None:
        if not self.cfg.skip_nonfinite:
            raise TrainingFault(
                f"non-finite {what} at step {step}. {self._checkpoint_note()} Lower optim.lr, "
                "or set guard.skip_nonfinite=true to skip such steps."
            )
        self._skip_this_step = True
        self.skipped_steps += 1
        log.warning("skipped step %d: non-finite %s (%d skipped)", step, what, self.skipped_steps)
        if self.skipped_steps > self.cfg.max_skipped_steps:
            raise TrainingFault(
                f"{self.skipped_steps} steps had non-finite values, more than "
                f"guard.max_skipped_steps={self.cfg.max_skipped_steps}; the last was step {step} "
                f"({what}). {self._checkpoint_note()}"
            )

    def _checkpoint_note(self) -> str:
        if self.last_checkpoint_step is None:
            return "No checkpoint was written before it."
        return (
            f"The last good checkpoint, {self.checkpoint_path} at step "
            f"{self.last_checkpoint_step}, was kept."
        )


def _nonfinite_gradients(module: torch.nn.Module) -> list[str]:
    """Names of the parameters whose gradient contains a NaN or an Inf, in module order."""
    # One fused check first: the per-tensor scan (a sync per tensor) runs only on a fault.
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads or bool(torch.isfinite(_norm_of_norms(grads))):
        return []
    return [
        name
        for name, p in module.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]


def _norm_of_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    # Finite whenever every entry is finite, barring float32 overflow, which only costs a scan.
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    return torch.linalg.vector_norm(norms)
