"""Rotary position embeddings (RoPE) in the interleaved-pair form."""

import torch
from torch import nn


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Build cos and sin tables of shape (max_seq_len, head_dim // 2) in float32."""
    if head_dim % 2 != 0:
        raise ValueError(f"rotary head_dim={head_dim} must be even.")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, T, H, D) by the angles of its positions.

    cos and sin are (T, D // 2), already gathered at the positions of x.
    """
    # Each pair (real, imag) is one complex number, so the rotation is one complex product:
    # a few large kernels instead of the many small ones (and their backward) of the
    # element-wise formula, with the same results.
    x_complex = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (B, T, H, D/2)
    rotation = torch.complex(cos.float(), sin.float())[None, :, None, :]  # (1, T, 1, D/2)
    return torch.view_as_real(x_complex * rotation).flatten(-2).type_as(x)  # (B, T, H, D)


class RotaryEmbedding(nn.Module):
    """Rotary tables for one attention module, indexed by absolute token positions."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float):
        super().__init__()
        cos, sin = rope_tables(head_dim, max_seq_len, theta)
        # Not persistent: the tables follow from the config, so checkpoints stay small.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, H, D) at positions (T,)."""
        return apply_rope(x, self.cos[positions], self.sin[positions])
