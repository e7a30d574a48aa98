"""Multi-head attention with grouped key/value heads: MHA, GQA and MQA in one module.

Shape legend: B batch, T query positions, S key positions, H query heads,
K key/value heads, D head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.model.cache import KVCache
from tinyseek.model.rope import RotaryEmbedding


class Attention(nn.Module):
    """Causal self-attention with n_kv_heads key/value heads shared by groups of query heads."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.resolved_head_dim
        self.wq = nn.Linear(cfg.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.dim, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, cfg.max_seq_len, cfg.rope_theta)

    def make_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        dtype: torch.dtype,
        device: torch.device,
        absorbed: bool = True,
    ) -> KVCache:
        """Allocate this layer's cache; `absorbed` only matters for MLA."""
        return KVCache(batch_size, max_seq_len, self.n_kv_heads, self.head_dim, dtype, device)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend x (B, T, dim) causally; positions (T,) are the absolute token positions."""
        B, T, _ = x.shape

        # Projections
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)

        # Rotary
        q = self.rotary(q, positions)
        k = self.rotary(k, positions)

        # Cache
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(k.to(cache.k.dtype), v.to(cache.v.dtype))  # (B, S, K, D)
            k, v = k.to(q.dtype), v.to(q.dtype)

        # Attention
        out = attend(
            q.transpose(1, 2),  # (B, H, T, D)
            k.transpose(1, 2),  # (B, K, S, D)
            v.transpose(1, 2),
            attn_mask=None if past == 0 or T == 1 else causal_mask(T, past, x.device),
            is_causal=past == 0 and T > 1,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, H, T, D)

        # Output projection
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Run scaled_dot_product_attention on q (B, H, T, D), k and v (B, K, S, D), in FP32 on CPU.

    With torch 2.13 on CPU, the fused attention kernel runs about twice as fast in FP32 as
    in BF16 at the head widths of the ablation models (16 to 32). Under BF16 autocast the
    CPU path therefore casts q, k and v up and the output back. Other devices keep the
    autocast dtype.
    """
    upcast = q.device.type == "cpu" and (
        q.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")
    )
    if not upcast:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
        )
    out_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(
            q.float(),
            k.float(),
            v.float(),
            attn_mask,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    return out.to(out_dtype)


def causal_mask(T: int, past: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, past + T) mask, True where a query may attend: keys at or before it.

    The queries are the T positions that follow `past` cached positions.
    """
    query_pos = torch.arange(past, past + T, device=device)[:, None]
    key_pos = torch.arange(past + T, device=device)[None, :]
    return key_pos <= query_pos
