"""Key/value caches for cached decoding, each able to report its own size in bytes."""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer cache of keys and values, preallocated for max_seq_len positions.

    Keys are stored as (B, S, n_kv_heads, head_dim) and values as (B, S, n_kv_heads,
    v_head_dim). Only the first `length` positions contain data, and only those count
    towards :attr:`nbytes`.
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
        v_head_dim: int | None = None,
    ):
        self.k = torch.zeros(
            (batch_size, max_seq_len, n_kv_heads, head_dim), dtype=dtype, device=device
        )
        v_shape = (batch_size, max_seq_len, n_kv_heads, v_head_dim or head_dim)
        self.v = torch.zeros(v_shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_seq_len(self) -> int:
        return self.k.shape[1]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k and v (B, T, n_kv_heads, head_dim) and return every cached position."""
        start, end = self.length, self.length + k.shape[1]
        if end > self.max_seq_len:
            raise ValueError(
                f"KV cache overflow: {end} positions requested but the cache has room for "
                f"{self.max_seq_len}. Build the cache with a larger max_seq_len."
            )
        self.k[:, start:end] = k
        self.v[:, start:end] = v
        self.length = end
        return self.k[:, :end], self.v[:, :end]

    @property
    def nbytes(self) -> int:
        """Bytes held by the filled part of the cache."""
        return self.k[:, : self.length].nbytes + self.v[:, : self.length].nbytes

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]


class LatentCache:
    """Per-layer MLA cache for absorbed decoding: the normalised KV latent and the RoPE key.

    The latent is stored as (B, S, kv_lora_rank) and the rotated key, shared by all heads,
    as (B, S, qk_rope_head_dim).
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        kv_lora_rank: int,
        qk_rope_head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        self.latent = torch.zeros(
            (batch_size, max_seq_len, kv_lora_rank), dtype=dtype, device=device
        )
        self.k_pe = torch.zeros(
            (batch_size, max_seq_len, qk_rope_head_dim), dtype=dtype, device=device
        )
        self.length = 0

    @property
    def max_seq_len(self) -> int:
        return self.latent.shape[1]

    @property
    def batch_size(self) -> int:
        return self.latent.shape[0]

    def update(self, latent: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append latent (B, T, C) and k_pe (B, T, R) and return every cached position."""
        start, end = self.length, self.length + latent.shape[1]
        if end > self.max_seq_len:
            raise ValueError(
                f"KV cache overflow: {end} positions requested but the cache has room for "
                f"{self.max_seq_len}. Build the cache with a larger max_seq_len."
            )
        self.latent[:, start:end] = latent
        self.k_pe[:, start:end] = k_pe
        self.length = end
        return self.latent[:, :end], self.k_pe[:, :end]

    @property
    def nbytes(self) -> int:
        """Bytes held by the filled part of the cache."""
        return self.latent[:, : self.length].nbytes + self.k_pe[:, : self.length].nbytes


class ModelCache:
    """The per-layer caches of one model, with totals across layers."""

    def __init__(self, layers: list[KVCache | LatentCache]):
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def bytes_per_token(self) -> float:
        """Measured cache bytes per cached token, summed over layers."""
        tokens = self.layers[0].batch_size * self.length
        if tokens == 0:
            raise ValueError("the cache is empty: run a forward pass with it first.")
        return self.nbytes / tokens
