"""The LightningModule that trains a tinyseek decoder on next-token prediction."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch

from tinyseek.config import ModelConfig, MTPConfig, OptimConfig
from tinyseek.model import Transformer
from tinyseek.model.loss import cross_entropy
from tinyseek.model.moe import MoE, load_telemetry
from tinyseek.model.mtp import mtp_losses
from tinyseek.training.schedule import warmup_cosine


class LanguageModel(L.LightningModule):
    """Cross-entropy training with AdamW, warmup plus cosine decay and gradient clipping."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: OptimConfig,
        max_steps: int,
        grad_clip: float,
        mtp_cfg: MTPConfig | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.mtp_cfg = mtp_cfg or MTPConfig()
        self.model = Transformer(model_cfg, self.mtp_cfg.depth)
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        # Looked up once: the per-step hooks below must not walk the blocks.
        self.moe_layers = self.model.moe_layers(include_mtp=True)
        if compile:
            # In place, so parameter names and checkpoints stay those of the eager model.
            self.model.compile()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of a batch of windows (B, T + 1)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)  # (B, T, V)
        return cross_entropy(logits, targets)

    def logging_step(self) -> bool:
        """True on the steps whose metrics the loggers and the history write, and the last one.

        Logging costs Python time on every call, so the other steps log nothing. The step
        in progress is global_step + 1 until the optimizer step completes.
        """
        step = self.trainer.global_step + 1
        return step % self.trainer.log_every_n_steps == 0 or step >= self.trainer.max_steps

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.model.mtp is None:
            loss, mtp_term = self.loss(batch), 0.0
        else:
            loss, mtp_term = self.loss_with_mtp(batch)
        logging = self.logging_step()
        # train/loss stays the main loss, comparable between runs with and without MTP.
        # sync_dist averages over DDP ranks; it is a no-op in one process.
        if logging:
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        if not self.moe_layers:
            return loss + mtp_term

        aux_loss = self.model.aux_loss()
        if logging:
            self.log("train/aux_loss", aux_loss, sync_dist=True)
        return loss + mtp_term + aux_loss

    def loss_with_mtp(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the main loss and lambda times the MTP loss averaged over depths."""
        logits, mtp_logits = self.model.forward_with_mtp(batch)
        main = cross_entropy(logits, batch[:, 1:])
        losses = mtp_losses(mtp_logits, batch)
        weight = self.mtp_cfg.weight_at(self.global_step, self.max_steps)
        if self.logging_step():
            for k, depth_loss in enumerate(losses, start=1):
                self.log(f"mtp/loss_depth{k}", depth_loss)
            self.log("mtp/loss_weight", weight)
        return main, weight * torch.stack(losses).mean()

    def balance_experts(self) -> None:
        """Move the MoE routing biases towards balance and log expert-load telemetry.

        Runs after the backward pass: the counts are complete, and the bias has no gradient,
        so updating it before or after the optimizer step trains the same model.
        """
        moe_layers = self.moe_layers
        if not moe_layers:
            return
        counts = torch.stack([moe.train_counts for moe in moe_layers])  # (layers, E)
        # The bias step uses the whole global batch, so ranks add their counts first.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        update_biases(moe_layers, counts, self.model.cfg.bias_update_speed)
        torch._foreach_zero_([moe.train_counts for moe in moe_layers])

        if not self.logging_step():
            return
        telemetry = load_telemetry(counts, moe_layers, self.model.cfg.n_dense_layers)
        for name, value in telemetry.items():
            self.log(f"moe/{name}", value)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch), prog_bar=True, sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Clipping here returns the pre-clip global norm for free; with clipping off the
        # infinite threshold only measures it.
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)
        if self.logging_step():
            self.log("train/grad_norm", grad_norm)
            self.log("train/lr", optimizer.param_groups[0]["lr"])
        self.balance_experts()

    def configure_optimizers(self):
        cfg = self.optim_cfg
        # Weight decay applies to matrices only, not to norms' gains.
        # The MoE routing bias has no gradient: balancing, not AdamW, moves it.
        trainable = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.dim() >= 2]
        no_decay = [p for p in trainable if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            fused=fused_adamw_supported(trainable),
        )
        schedule = partial(
            warmup_cosine,
            warmup_steps=cfg.warmup_steps,
            max_steps=self.max_steps,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def update_biases(moe_layers: list[MoE], counts: torch.Tensor, speed: float) -> None:
    """Apply MoE.update_bias to every aux_free layer at once from their counts (layers, E)."""
    balanced = [i for i, moe in enumerate(moe_layers) if "aux_free" in moe.balance]
    if not balanced:
        return
    steps = speed * torch.sign(counts.mean(dim=1, keepdim=True) - counts)  # (layers, E)
    with torch.no_grad():
        torch._foreach_add_(
            [moe_layers[i].gate.bias for i in balanced], [steps[i] for i in balanced]
        )


def fused_adamw_supported(params: list[torch.Tensor]) -> bool:
    """True when torch has a fused AdamW kernel for these parameters' device and dtypes."""
    # NOTE: a private torch helper (checked with torch 2.13). Without it AdamW keeps foreach.
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    supported = _get_fused_kernels_supported_devices()
    return bool(params) and all(
        p.device.type in supported and p.is_floating_point() for p in params
    )
