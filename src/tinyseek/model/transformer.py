"""The pre-norm decoder: embedding, blocks of attention and feed-forward, norm, head."""

from __future__ import annotations

import math

import torch
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.model.attention import Attention
from tinyseek.model.cache import KVCache, LatentCache, ModelCache
from tinyseek.model.ffn import SwiGLU
from tinyseek.model.mla import MLA
from tinyseek.model.moe import MoE
from tinyseek.model.mtp import MultiTokenPrediction
from tinyseek.model.norm import RMSNorm


class Block(nn.Module):
    """x + attn(attn_norm(x)), then x + ffn(ffn_norm(x))."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = MLA(cfg) if cfg.attention == "mla" else Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        use_moe = cfg.ffn == "moe" and layer_id >= cfg.n_dense_layers
        self.ffn = MoE(cfg) if use_moe else SwiGLU(cfg.dim, cfg.inter_dim)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | LatentCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), positions, cache)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """Decoder-only language model; forward returns logits (B, T, vocab_size).

    With mtp_depth > 0 it also holds the multi-token prediction modules (`mtp`), which
    only training and evaluation call; forward and decoding ignore them.
    """

    def __init__(self, cfg: ModelConfig, mtp_depth: int = 0):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("model.vocab_size is unset: take it from the prepared meta.json.")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, layer_id) for layer_id in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        # Built outside the global RNG stream and registered last, so the main weights draw
        # the same initial values with or without MTP.
        self.mtp = None
        if mtp_depth > 0:
            with torch.random.fork_rng(devices=[]):
                self.mtp = MultiTokenPrediction(cfg, mtp_depth)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2L)."""
        std = self.cfg.init_std
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue
            is_residual_out = name.endswith(
                ("attn.wo.weight", "ffn.w2.weight", "experts.w2", "shared_experts.w2.weight")
            )
            nn.init.normal_(param, mean=0.0, std=residual_std if is_residual_out else std)

    def make_cache(
        self,
        batch_size: int,
        max_seq_len: int | None = None,
        dtype: torch.dtype | None = None,
        absorbed: bool = True,
    ) -> ModelCache:
        """Allocate an empty cache for cached decoding, in the weights' dtype by default.

        For MLA, `absorbed` picks the latent cache (True) or full per-head keys and values.
        """
        max_seq_len = max_seq_len or self.cfg.max_seq_len
        dtype = dtype or self.head.weight.dtype
        device = self.head.weight.device
        caches = [
            block.attn.make_cache(batch_size, max_seq_len, dtype, device, absorbed)
            for block in self.layers
        ]
        return ModelCache(caches)

    def moe_layers(self, include_mtp: bool = False) -> list[MoE]:
        """Return the MoE feed-forwards of the main blocks, then those of the MTP blocks."""
        blocks = list(self.layers)
        if include_mtp and self.mtp is not None:
            blocks += [module.block for module in self.mtp.layers]
        return [block.ffn for block in blocks if isinstance(block.ffn, MoE)]

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE balance losses of the last training forward (0 for dense models)."""
        losses = [moe.aux_loss for moe in self.moe_layers(include_mtp=True)]
        return (
            torch.stack(losses).sum() if losses else torch.zeros((), device=self.head.weight.device)
        )

    def forward(self, tokens: torch.Tensor, cache: ModelCache | None = None) -> torch.Tensor:
        """Return logits for tokens (B, T); with a cache, tokens continue the cached ones."""
        return self.head(self.norm(self.hidden_states(tokens, cache)))  # (B, T, vocab_size)

    def forward_with_mtp(self, window: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return main logits (B, T, V) for window[:, :-1] and the MTP logits of each depth.

        window (B, T + 1) contains the inputs and the next token; depth k's logits
        (B, T - k, V) predict window[:, k + 1 :]. Without MTP modules the list is empty.
        """
        hidden = self.hidden_states(window[:, :-1])  # (B, T, dim)
        logits = self.head(self.norm(hidden))
        if self.mtp is None:
            return logits, []
        return logits, self.mtp(hidden, window, self.embed, self.head)

    def hidden_states(self, tokens: torch.Tensor, cache: ModelCache | None = None) -> torch.Tensor:
        """Return the last block's output (B, T, dim), before the final norm."""
        start = cache.length if cache is not None else 0
        T = tokens.shape[1]
        if start + T > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds model.max_seq_len="
                f"{self.cfg.max_seq_len}: shorten the input or raise model.max_seq_len."
            )
        positions = torch.arange(start, start + T, device=tokens.device)

        x = self.embed(tokens)  # (B, T, dim)
        for i, block in enumerate(self.layers):
            x = block(x, positions, cache.layers[i] if cache is not None else None)
        return x
