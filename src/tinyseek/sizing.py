"""Analytic sizes: parameters, KV-cache elements and bytes per token, training FLOPs per token."""

from __future__ import annotations

import torch

from tinyseek.config import ModelConfig


def kv_cache_elements_per_token_per_layer(cfg: ModelConfig) -> int:
    """Cached elements per token in one layer: 2 * n_kv_heads * head_dim (keys and values).

    This is DeepSeek-V2's Table 1 count: MHA 2*n_heads*d_h, GQA 2*n_kv_heads*d_h, MQA 2*d_h.
    """
    return 2 * cfg.n_kv_heads * cfg.resolved_head_dim


def kv_cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Cache bytes per token summed over all layers, in the cache dtype."""
    element_size = torch.empty((), dtype=dtype).element_size()
    return kv_cache_elements_per_token_per_layer(cfg) * cfg.n_layers * element_size


def mha_kv_cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Cache bytes per token of MHA with the same n_heads, head_dim and layers."""
    element_size = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.n_heads * cfg.resolved_head_dim * cfg.n_layers * element_size


def count_parameters(module: torch.nn.Module) -> int:
    """Distinct parameters of a module (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


def train_flops_per_token(model: torch.nn.Module, cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul weight plus the attention scores and mixing.

    The attention term is 12 * n_layers * n_heads * head_dim * seq_len (forward and backward
    of QK^T and AV with full, unmasked cost), the PaLM convention. The embedding lookup is
    not a matmul, so its weights are excluded unless the head shares them.
    """
    matmul_params = count_parameters(model)
    if not cfg.tie_embeddings:
        matmul_params -= model.embed.weight.numel()
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.resolved_head_dim * seq_len
    return 6.0 * matmul_params + attention
