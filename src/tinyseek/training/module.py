"""The LightningModule that trains a tinyseek decoder on next-token prediction."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F

from tinyseek.config import ModelConfig, MTPConfig, OptimConfig
from tinyseek.model import Transformer
from tinyseek.model.moe import load_telemetry
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
    ):
        super().__init__()
        self.mtp_cfg = mtp_cfg or MTPConfig()
        self.model = Transformer(model_cfg, self.mtp_cfg.depth)
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.grad_clip = grad_clip

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of a batch of windows (B, T + 1)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)  # (B, T, V)
        # The softmax runs in float32 even under bf16 autocast, for an accurate loss.
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.model.mtp is None:
            loss, mtp_term = self.loss(batch), 0.0
        else:
            loss, mtp_term = self.loss_with_mtp(batch)
        # train/loss stays the main loss, comparable between runs with and without MTP.
        # sync_dist averages over DDP ranks; it is a no-op in one process.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        if not self.model.moe_layers(include_mtp=True):
            return loss + mtp_term

        aux_loss = self.model.aux_loss()
        self.log("train/aux_loss", aux_loss, sync_dist=True)
        return loss + mtp_term + aux_loss

    def loss_with_mtp(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the main loss and lambda times the MTP loss averaged over depths."""
        logits, mtp_logits = self.model.forward_with_mtp(batch)
        main = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        losses = mtp_losses(mtp_logits, batch)
        for k, depth_loss in enumerate(losses, start=1):
            self.log(f"mtp/loss_depth{k}", depth_loss)
        weight = self.mtp_cfg.weight_at(self.global_step, self.max_steps)
        self.log("mtp/loss_weight", weight)
        return main, weight * torch.stack(losses).mean()

    def on_train_batch_end(self, outputs, batch: torch.Tensor, batch_idx: int) -> None:
        """Move the MoE routing biases towards balance and log expert-load telemetry."""
        moe_layers = self.model.moe_layers(include_mtp=True)
        if not moe_layers:
            return
        counts = torch.stack([moe.train_counts for moe in moe_layers])  # (layers, E)
        # The bias step uses the whole global batch, so ranks add their counts first.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        for moe, layer_counts in zip(moe_layers, counts, strict=True):
            if "aux_free" in moe.balance:
                moe.update_bias(layer_counts, self.model.cfg.bias_update_speed)
            moe.train_counts.zero_()
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
        self.log("train/grad_norm", grad_norm)
        self.log("train/lr", optimizer.param_groups[0]["lr"])

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
