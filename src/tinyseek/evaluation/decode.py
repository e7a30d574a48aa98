"""Cached decoding: KV-cache bytes measured from the cache tensors, tokens/s, samples."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from tinyseek.model import Transformer


@dataclass
class DecodeStats:
    """Cached greedy decoding of one sequence."""

    tokens_per_s: float
    kv_bytes_per_token_measured: float
    kv_cache_bytes: int
    cached_tokens: int


@torch.no_grad()
def measure_decoding(
    model: Transformer,
    prompt: torch.Tensor,
    new_tokens: int,
    cache_dtype: torch.dtype,
    autocast: AbstractContextManager,
    absorbed: bool = True,
) -> DecodeStats:
    """Prefill prompt (B, T), then greedily decode new_tokens one at a time with the cache.

    `absorbed` picks MLA's latent cache or its naive full key/value cache.
    """
    cache = model.make_cache(
        batch_size=prompt.shape[0],
        max_seq_len=prompt.shape[1] + new_tokens,
        dtype=cache_dtype,
        absorbed=absorbed,
    )
    with autocast:
        logits = model(prompt, cache)
        next_token = logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(new_tokens):
            logits = model(next_token, cache)
            next_token = logits[:, -1:].argmax(-1)
        elapsed = time.perf_counter() - started
    return DecodeStats(
        tokens_per_s=new_tokens * prompt.shape[0] / elapsed,
        kv_bytes_per_token_measured=cache.bytes_per_token(),
        kv_cache_bytes=cache.nbytes,
        cached_tokens=cache.length,
    )


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: torch.Tensor,
    new_tokens: int,
    temperature: float,
    top_k: int,
    generator: torch.Generator,
    autocast: AbstractContextManager,
) -> torch.Tensor:
    """Sample new_tokens after prompt (1, T) with temperature and top-k; returns (1, T + new)."""
    max_seq_len = model.cfg.max_seq_len
    prompt = prompt[:, -max_seq_len // 2 :]
    tokens = prompt
    cache = model.make_cache(prompt.shape[0], max_seq_len)
    next_input = prompt
    with autocast:
        for _ in range(new_tokens):
            if cache.length + next_input.shape[1] > max_seq_len:
                # The context is full: restart the cache on the most recent half.
                cache = model.make_cache(prompt.shape[0], max_seq_len)
                next_input = tokens[:, -max_seq_len // 2 :]
            logits = model(next_input, cache)[:, -1].float() / temperature  # (1, V)
            top_values, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
            logits[logits < top_values[:, -1:]] = -float("inf")
            probs = torch.softmax(logits, dim=-1)
            next_input = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
            tokens = torch.cat([tokens, next_input], dim=1)
    return tokens
