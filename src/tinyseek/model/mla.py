"""Multi-head Latent Attention (DeepSeek-V2/V3) with naive and absorbed decoding.

Shape legend: B batch, T query positions, S key positions, H heads, C kv_lora_rank,
R qk_rope_head_dim, N qk_nope_head_dim, V v_head_dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.model.attention import attend, causal_mask
from tinyseek.model.cache import KVCache, LatentCache
from tinyseek.model.norm import RMSNorm
from tinyseek.model.rope import RotaryEmbedding


class MLA(nn.Module):
    """Low-rank query, a compressed KV latent plus one shared RoPE key, per-head up-projections.

    Three paths share the weights. Training (no cache) and naive decoding (a KVCache of full
    keys and values) up-project the latent. Absorbed decoding (a LatentCache) folds the key
    up-projection into the query and the value up-projection into the output, so only the
    latent and the RoPE key are cached.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q_lora_rank = cfg.q_lora_rank
        self.kv_lora_rank = cfg.kv_lora_rank
        self.qk_nope_head_dim = cfg.qk_nope_head_dim
        self.qk_rope_head_dim = cfg.qk_rope_head_dim
        self.qk_head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        self.v_head_dim = cfg.v_head_dim
        self.softmax_scale = 1.0 / math.sqrt(self.qk_head_dim)

        if self.q_lora_rank == 0:
            self.wq = nn.Linear(cfg.dim, self.n_heads * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(cfg.dim, self.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(self.q_lora_rank, cfg.norm_eps)
            self.wq_b = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(cfg.dim, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_lora_rank, cfg.norm_eps)
        self.wkv_b = nn.Linear(
            self.kv_lora_rank, self.n_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False
        )
        self.wo = nn.Linear(self.n_heads * self.v_head_dim, cfg.dim, bias=False)
        self.rotary = RotaryEmbedding(self.qk_rope_head_dim, cfg.max_seq_len, cfg.rope_theta)

    def make_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        dtype: torch.dtype,
        device: torch.device,
        absorbed: bool = True,
    ) -> LatentCache | KVCache:
        """Allocate a latent cache (absorbed decoding) or a full key/value cache (naive)."""
        if absorbed:
            return LatentCache(
                batch_size, max_seq_len, self.kv_lora_rank, self.qk_rope_head_dim, dtype, device
            )
        return KVCache(
            batch_size, max_seq_len, self.n_heads, self.qk_head_dim, dtype, device, self.v_head_dim
        )

    def _query(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q = self.wq(x) if self.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(B, T, self.n_heads, self.qk_head_dim)  # (B, T, H, N + R)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return q_nope, self.rotary(q_pe, positions)

    def _latent(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.wkv_a(x)  # (B, T, C + R)
        kv_c, k_pe = kv.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        k_pe = self.rotary(k_pe.unsqueeze(2), positions).squeeze(2)  # (B, T, R), shared by heads
        return self.kv_norm(kv_c), k_pe

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LatentCache | KVCache | None = None,
    ) -> torch.Tensor:
        """Attend x (B, T, dim) causally; the cache type picks absorbed or naive decoding."""
        # Query projection and compressed KV
        q_nope, q_pe = self._query(x, positions)
        kv_c, k_pe = self._latent(x, positions)
        if isinstance(cache, LatentCache):
            out = self._absorbed(q_nope, q_pe, kv_c, k_pe, cache)
        else:
            out = self._expanded(q_nope, q_pe, kv_c, k_pe, cache)

        # Output projection
        B, T = x.shape[:2]
        return self.wo(out.reshape(B, T, self.n_heads * self.v_head_dim))

    def _expanded(self, q_nope, q_pe, kv_c, k_pe, cache: KVCache | None) -> torch.Tensor:
        """Up-project keys and values per head and run SDPA (training and naive decoding)."""
        B, T = q_nope.shape[:2]
        kv = self.wkv_b(kv_c).view(B, T, self.n_heads, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k_pe = k_pe.unsqueeze(2).expand(-1, -1, self.n_heads, -1)  # (B, T, H, R)
        k = torch.cat([k_nope, k_pe], dim=-1)  # (B, T, H, N + R)
        q = torch.cat([q_nope, q_pe], dim=-1)

        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(k.to(cache.k.dtype), v.to(cache.v.dtype))  # (B, S, H, ...)
            k, v = k.to(q.dtype), v.to(q.dtype)

        # Without a cache, values are zero-padded to the query/key width because SDPA's fused
        # kernel needs equal widths. The padded output columns are zero and get dropped.
        pad = self.qk_head_dim - self.v_head_dim if past == 0 and T > 1 else 0
        if pad > 0:
            v = F.pad(v, (0, pad))  # (B, S, H, N + R)
        out = attend(
            q.transpose(1, 2),  # (B, H, T, N + R)
            k.transpose(1, 2),  # (B, H, S, N + R)
            v.transpose(1, 2),  # (B, H, S, V) or (B, H, S, N + R) when padded
            attn_mask=None if past == 0 or T == 1 else causal_mask(T, past, q.device),
            is_causal=past == 0 and T > 1,
            scale=self.softmax_scale,
        )
        return out[..., : self.v_head_dim].transpose(1, 2)  # (B, T, H, V)

    def _absorbed(self, q_nope, q_pe, kv_c, k_pe, cache: LatentCache) -> torch.Tensor:
        """Attend in the latent space: W_UK folds into the query, W_UV into the output."""
        T = q_nope.shape[1]
        past = cache.length
        # (B, S, C) and (B, S, R)
        kv_c, k_pe = cache.update(kv_c.to(cache.latent.dtype), k_pe.to(cache.k_pe.dtype))
        kv_c, k_pe = kv_c.to(q_nope.dtype), k_pe.to(q_nope.dtype)

        wkv_b = self.wkv_b.weight.view(
            self.n_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank
        )
        w_uk, w_uv = wkv_b.split(
            [self.qk_nope_head_dim, self.v_head_dim], dim=1
        )  # (H, N, C), (H, V, C)

        # Scores: the absorbed no-position part plus the shared RoPE part
        q_latent = torch.einsum("bthn,hnc->bthc", q_nope, w_uk.to(q_nope.dtype))  # (B, T, H, C)
        scores = torch.einsum("bthc,bsc->bhts", q_latent, kv_c)
        scores = scores + torch.einsum("bthr,bsr->bhts", q_pe, k_pe)
        scores = scores.float() * self.softmax_scale  # (B, H, T, S)
        if T > 1:
            scores = scores.masked_fill(~causal_mask(T, past, scores.device), float("-inf"))
        probs = scores.softmax(dim=-1).to(kv_c.dtype)

        # Values: mix latents, then up-project per head
        out_latent = torch.einsum("bhts,bsc->bthc", probs, kv_c)  # (B, T, H, C)
        return torch.einsum("bthc,hvc->bthv", out_latent, w_uv.to(out_latent.dtype))  # (B, T, H, V)
