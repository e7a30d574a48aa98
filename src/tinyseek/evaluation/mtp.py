"""Multi-token prediction metrics: each depth's loss and the depth-1 acceptance rate."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tinyseek.model import Transformer


@torch.no_grad()
def mtp_metrics(
    model: Transformer,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    autocast: AbstractContextManager,
) -> dict[str, Any]:
    """Measure the MTP modules on consecutive windows of seq_len + 1 tokens of a split.

    The acceptance rate is how often depth 1's prediction of token i + 2 equals the main
    model's greedy prediction at position i + 1, the check a speculative decoder makes
    before it accepts a drafted token.
    NOTE: inputs are the real text (teacher forcing), not the main model's own greedy tokens,
    so this is a proxy for the acceptance rate of greedy speculative decoding.
    """
    if model.mtp is None:
        raise ValueError("the model has no MTP modules: train it with mtp.depth of 1 or more.")
    depth = model.mtp.depth
    nll = [0.0] * depth
    counts = [0] * depth
    accepted = correct = drafted = 0
    starts = list(range(0, len(tokens) - seq_len, seq_len))
    if not starts:
        raise ValueError(
            f"the split has {len(tokens)} tokens, too few for one window of data.seq_len="
            f"{seq_len} + 1."
        )

    for first in tqdm(range(0, len(starts), batch_size), desc="mtp", leave=False, disable=None):
        batch_starts = starts[first : first + batch_size]
        windows = np.stack([tokens[s : s + seq_len + 1] for s in batch_starts]).astype(np.int64)
        window = torch.from_numpy(windows).to(model.head.weight.device)  # (B, T + 1)
        with autocast:
            logits, mtp_logits = model.forward_with_mtp(window)

        # Per-depth loss: depth k predicts window[:, k + 1 :]
        for k, depth_logits in enumerate(mtp_logits):
            targets = window[:, k + 2 :]  # (B, T - k - 1)
            nll[k] += F.cross_entropy(
                depth_logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"
            ).item()
            counts[k] += targets.numel()

        # Depth-1 drafts against the main model's next greedy token
        draft = mtp_logits[0].argmax(-1)  # (B, T - 1), guesses for window[:, 2:]
        verified = logits[:, 1:].argmax(-1)  # (B, T - 1), the main model one step later
        accepted += int((draft == verified).sum())
        correct += int((draft == window[:, 2:]).sum())
        drafted += draft.numel()

    metrics: dict[str, Any] = {"depth": depth}
    for k in range(depth):
        metrics[f"loss_depth{k + 1}"] = nll[k] / counts[k]
    metrics["acceptance_rate"] = accepted / drafted
    metrics["accuracy_depth1"] = correct / drafted
    metrics["drafted_tokens"] = drafted
    return metrics
