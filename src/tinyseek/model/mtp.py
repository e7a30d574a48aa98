"""Multi-token prediction (DeepSeek-V3): sequential modules that predict tokens further ahead.

Module k (1-based) combines the previous depth's hidden state at position i with the
embedding of token i + k and predicts token i + k + 1. All modules share the main model's
embedding and output head. Each has its own two RMSNorms, d x 2d projection and block, and
an output RMSNorm before the shared head, like the MTP layer of the released DeepSeek-V3
weights (enorm, hnorm, eh_proj, shared_head.norm).

Shape legend: B batch, T positions, D dim, V vocab_size.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.model.loss import cross_entropy
from tinyseek.model.norm import RMSNorm


class MTPModule(nn.Module):
    """One prediction depth: norms, the 2d -> d projection, one block and an output norm."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        # Imported here because transformer.py imports this module.
        from tinyseek.model.transformer import Block

        self.hidden_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.embed_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)
        self.block = Block(cfg, layer_id)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(
        self, hidden: torch.Tensor, next_embeds: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Combine hidden (B, T, D) with the next tokens' embeddings (B, T, D); return (B, T, D)."""
        # Embedding first, then hidden state: the order of DeepSeek-V3's eh_proj input.
        combined = torch.cat([self.embed_norm(next_embeds), self.hidden_norm(hidden)], dim=-1)
        return self.block(self.proj(combined), positions)  # (B, T, D)


class MultiTokenPrediction(nn.Module):
    """`depth` MTP modules applied in sequence after the main model's last block."""

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        # Layer ids continue after the main blocks, so MoE applies as it does in deep layers.
        self.layers = nn.ModuleList(MTPModule(cfg, cfg.n_layers + k) for k in range(depth))

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(
        self,
        hidden: torch.Tensor,
        tokens: torch.Tensor,
        embed: nn.Embedding,
        head: nn.Linear,
    ) -> list[torch.Tensor]:
        """Return logits per depth from the main model's last hidden states.

        hidden (B, T, D) is the main model's last block output for tokens[:, :T], and tokens
        (B, T + 1) is the whole window. Depth k (from 1) returns logits (B, T - k, V) that
        predict tokens[:, k + 1 :] from the hidden states of positions 0 .. T - k - 1.
        """
        T = hidden.shape[1]
        if tokens.shape[1] != T + 1:
            raise ValueError(f"tokens has {tokens.shape[1]} positions, expected T + 1 = {T + 1}.")
        if T <= self.depth:
            raise ValueError(
                f"a window of {T} inputs is too short for mtp.depth={self.depth}: every depth "
                "needs at least one position, so use a longer data.seq_len or a smaller depth."
            )
        logits = []
        for k, module in enumerate(self.layers, start=1):
            length = T - k
            positions = torch.arange(length, device=hidden.device)
            next_embeds = embed(tokens[:, k:T])  # (B, T - k, D)
            hidden = module(hidden[:, :length], next_embeds, positions)
            logits.append(head(module.norm(hidden)))  # (B, T - k, V)
        return logits


def mtp_losses(mtp_logits: list[torch.Tensor], window: torch.Tensor) -> list[torch.Tensor]:
    """Return the cross-entropy of each depth; depth k's logits predict window[:, k + 1 :]."""
    losses = []
    for k, logits in enumerate(mtp_logits, start=1):
        targets = window[:, k + 1 :]  # (B, T - k)
        losses.append(cross_entropy(logits, targets))
    return losses
