"""A W&B logger whose points never run ahead of the last checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only


class CheckpointAlignedWandbLogger(WandbLogger):
    """Holds metric points until a checkpoint covering their step has been written.

    After a kill, W&B has exactly the points up to the last checkpoint, and the resumed job
    logs from the step after it under the same run id: no point is dropped or sent twice.
    The cost is that the dashboard lags by up to trainer.checkpoint_every_n_steps.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[dict[str, float], int | None]] = []
        self._saved_step = -1

    def set_saved_step(self, step: int) -> None:
        """Record that a checkpoint covers every step up to `step` (a resume calls this)."""
        self._saved_step = step

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is not None and step <= self._saved_step:
            super().log_metrics(metrics, step)
        else:
            self._pending.append((dict(metrics), step))

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self._saved_step = max(self._saved_step, checkpoint_callback._last_global_step_saved)
        self.flush()

    @rank_zero_only
    def flush(self) -> None:
        """Send the held points to W&B."""
        pending, self._pending = self._pending, []
        for metrics, step in pending:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # A failed fit drops what followed its last checkpoint, because a resume logs it again.
        # NOTE: a kill while flush() is sending can still leave some of those points twice.
        if status == "success":
            self.flush()
        else:
            self._pending = []
        super().finalize(status)
