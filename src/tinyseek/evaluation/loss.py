"""Validation loss and bits per UTF-8 byte over a whole token split."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tinyseek.model import Transformer


@torch.no_grad()
def split_nll(
    model: Transformer,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    autocast: AbstractContextManager,
) -> tuple[float, int]:
    """Sum next-token negative log-likelihoods (nats) over every token after the first.

    The split is cut into consecutive, non-overlapping windows of seq_len predictions, so
    each token is predicted once, with between 0 and seq_len - 1 tokens of context.
    Returns the summed loss and the number of predicted tokens.
    """
    n_targets = len(tokens) - 1
    n_full = n_targets // seq_len
    total_nll = 0.0
    for first in tqdm(range(0, n_full, batch_size), desc="val loss", leave=False, disable=None):
        starts = [w * seq_len for w in range(first, min(first + batch_size, n_full))]
        total_nll += _windows_nll(model, tokens, starts, seq_len, autocast)

    # The last, shorter window runs on its own, so no padding is needed.
    tail = n_targets - n_full * seq_len
    if tail:
        total_nll += _windows_nll(model, tokens, [n_full * seq_len], tail, autocast)
    return total_nll, n_targets


def _windows_nll(
    model: Transformer,
    tokens: np.ndarray,
    starts: list[int],
    length: int,
    autocast: AbstractContextManager,
) -> float:
    windows = np.stack([tokens[s : s + length + 1] for s in starts]).astype(np.int64)
    batch = torch.from_numpy(windows).to(model.head.weight.device)  # (B, T + 1)
    with autocast:
        logits = model(batch[:, :-1])  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
    return nll.item()


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    """Convert a summed loss in nats to bits per UTF-8 byte of the text it covers."""
    return total_nll / math.log(2) / n_bytes
