"""DeepSeek-V3's blockwise FP8 Linear: E4M3 in all three GEMMs, FP32 accumulation per K-slice.

Activations and output gradients are quantised in 1 x tile tiles, weights in tile x tile
blocks. On a GPU with FP8 units a GEMM runs one K-slice of width tile at a time, as an FP8
product with one scale per row of A and per column of B. The tile and block scales thus
apply exactly where DeepSeek promotes the partial sums to FP32.

Without FP8 units (CPUs, older GPUs) every FP8 GEMM is an emulation: on CPU,
torch._scaled_mm itself converts both operands to FP32. This module then converts each
E4M3 operand to FP32 once, multiplies in its tile or block scales and runs one FP32 GEMM
over the whole K. The sum is the same as the per-slice one, and only the FP32 rounding
order differs. The E4M3 values, the quantisation under study, are identical.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyseek.precision.quantise import (
    E4M3,
    dequantise_blocks,
    dequantise_columns,
    dequantise_tiles,
    quantise_blocks,
    quantise_columns,
    quantise_tiles,
)


def blockwise_mm(
    a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor, tile: int
) -> torch.Tensor:
    """FP32 product of E4M3 a (M, K) and b (K, N) with per-slice scales.

    a_scale (M, K // tile) has one scale per row and K-slice, b_scale (K // tile, N) one per
    K-slice and column. Each K-slice is a rowwise-scaled FP8 GEMM with an FP32 result.
    """
    m, k = a.shape
    n = b.shape[1]
    slices = k // tile
    a_slices = a.reshape(m, slices, tile).transpose(0, 1)  # (S, M, tile)
    b_slices = b.reshape(slices, tile, n)  # (S, tile, N)
    return sliced_mm(a_slices, a_scale.t().unsqueeze(-1), b_slices, b_scale.unsqueeze(1))


def sliced_mm(
    a_slices: torch.Tensor, a_scale: torch.Tensor, b_slices: torch.Tensor, b_scale: torch.Tensor
) -> torch.Tensor:
    """Sum over s of the FP8 products a_slices[s] (M, tile) @ b_slices[s] (tile, N), in FP32.

    a_scale (S, M, 1) scales the rows of each A slice and b_scale (S, 1, N) the columns of
    each B slice, so every slice is one rowwise-scaled torch._scaled_mm.
    """
    # NOTE: this is the portable path (CPU and any GPU with _scaled_mm). A fused Hopper kernel
    # that promotes partial sums inside the GEMM could replace the loop behind this signature.
    a_slices = a_slices.contiguous()  # row-major A, as _scaled_mm wants it
    a_scale, b_scale = a_scale.contiguous(), b_scale.contiguous()
    # GPUs want B column-major. The CPU kernel converts both operands to FP32 either way,
    # so there a row-major B saves a copy.
    column_major = b_slices.device.type != "cpu"

    out = None
    for s in range(a_slices.shape[0]):
        b = b_slices[s].t().contiguous().t() if column_major else b_slices[s]
        part = torch._scaled_mm(
            a_slices[s], b, scale_a=a_scale[s], scale_b=b_scale[s], out_dtype=torch.float32
        )
        out = part if out is None else out.add_(part)
    return out


def _pad_to(x: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    """Zero-pad x along dim up to a multiple (zeros leave every product unchanged)."""
    extra = -x.shape[dim] % multiple
    if extra == 0:
        return x
    if x.dtype == E4M3:  # F.pad has no FP8 kernel, so pad the raw bytes (byte 0 is +0.0)
        return _pad_to(x.view(torch.uint8), dim, multiple).view(E4M3)
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad)


def has_fp8_units(device: torch.device) -> bool:
    """Return whether device multiplies E4M3 in hardware: CUDA compute capability 8.9 and up."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def _fp8_gradients(
    dy: torch.Tensor, x2: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute dX (M, K) and dW (N, K) from dY (M, N) with per-slice FP8 GEMMs."""
    k = w_q.shape[1]

    # Input gradient dX = dY W: contraction over N, so dY is tiled along N.
    dy_q, dy_scale = quantise_tiles(_pad_to(dy, 1, tile), tile)  # (M, N_pad)
    b_scale = w_scale.repeat_interleave(tile, dim=1)[:, :k]  # (N_pad / tile, K)
    grad_x = blockwise_mm(dy_q, dy_scale, _pad_to(w_q, 0, tile), b_scale, tile)  # (M, K)

    # Weight gradient dW = sum over token slices s of dY_s^T X_s. Both operands are tiled
    # along the tokens and quantised as they lie, without transposed FP32 copies.
    dyt_q, dyt_scale = quantise_columns(_pad_to(dy, 0, tile), tile)  # (S, tile, N), (S, N)
    xt_q, xt_scale = quantise_columns(_pad_to(x2, 0, tile), tile)  # (S, tile, K), (S, K)
    grad_w = sliced_mm(
        dyt_q.transpose(1, 2),  # (S, N, tile)
        dyt_scale.unsqueeze(-1),  # (S, N, 1)
        xt_q,
        xt_scale.unsqueeze(1),  # (S, 1, K)
    )  # (N, K)
    return grad_x, grad_w


def _emulated_gradients(
    dy: torch.Tensor, x2: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute _fp8_gradients' result with FP32 GEMMs over dequantised E4M3 operands."""
    n = dy.shape[1]

    dy_q, dy_scale = quantise_tiles(_pad_to(dy, 1, tile), tile)  # (M, N_pad)
    dy_rows = dequantise_tiles(dy_q, dy_scale)[:, :n]  # (M, N)
    # The forward saved the E4M3 weight, not its FP32 copy, so it is dequantised again here.
    grad_x = dy_rows @ dequantise_blocks(w_q, w_scale, tile)  # (M, K)

    # Tiled along the tokens. Padded rows are zeros, so they drop out of the sum.
    dy_columns = dequantise_columns(*quantise_columns(_pad_to(dy, 0, tile), tile))  # (M_pad, N)
    x_columns = dequantise_columns(*quantise_columns(_pad_to(x2, 0, tile), tile))  # (M_pad, K)
    grad_w = dy_columns.t() @ x_columns  # (N, K)
    return grad_x, grad_w


class _BlockwiseLinearFunction(torch.autograd.Function):
    """y = x W^T with the forward, input-gradient and weight-gradient GEMMs in FP8."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tile: int) -> torch.Tensor:
        out_dtype = (
            torch.get_autocast_dtype(x.device.type)
            if torch.is_autocast_enabled(x.device.type)
            else x.dtype
        )
        n, k = weight.shape
        x2 = x.reshape(-1, k)  # (M, K)

        x_q, x_scale = quantise_tiles(x2, tile)  # (M, K), (M, K / tile)
        w_q, w_scale = quantise_blocks(weight, tile)  # (N, K), (Nb, K / tile)
        if has_fp8_units(x.device):
            # Block scales as per-slice column scales of B = W^T (K, N).
            b_scale = w_scale.t().repeat_interleave(tile, dim=1)[:, :n]  # (K / tile, N)
            y = blockwise_mm(x_q, x_scale, w_q.t(), b_scale, tile)  # (M, N)
        else:
            w = dequantise_blocks(w_q, w_scale, tile)  # (N, K)
            y = dequantise_tiles(x_q, x_scale) @ w.t()  # (M, N)

        ctx.save_for_backward(x2, w_q, w_scale)
        ctx.tile = tile
        ctx.input_shape = x.shape
        ctx.input_dtype = x.dtype
        return y.to(out_dtype).reshape(*x.shape[:-1], n)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x2, w_q, w_scale = ctx.saved_tensors
        tile = ctx.tile
        dy = grad_out.reshape(-1, w_q.shape[0]).float()  # (M, N)
        if has_fp8_units(dy.device):
            grad_x, grad_w = _fp8_gradients(dy, x2, w_q, w_scale, tile)
        else:
            grad_x, grad_w = _emulated_gradients(dy, x2, w_q, w_scale, tile)

        grad_x = grad_x.to(ctx.input_dtype).reshape(ctx.input_shape)
        return grad_x, grad_w, None


def blockwise_linear(x: torch.Tensor, weight: torch.Tensor, tile: int = 128) -> torch.Tensor:
    """x (..., K) times weight (N, K)^T through the blockwise FP8 recipe."""
    if tile <= 0 or weight.shape[1] % tile != 0:
        raise ValueError(
            f"blockwise FP8 tile={tile} must be positive and divide in_features="
            f"{weight.shape[1]}; pick a tile that divides it (128, 64 or 32)."
        )
    return _BlockwiseLinearFunction.apply(x, weight, tile)


class Float8BlockwiseLinear(nn.Linear):
    """An nn.Linear whose three GEMMs run in blockwise-scaled E4M3; weights stay FP32."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, tile: int = 128):
        super().__init__(in_features, out_features, bias=bias)
        self.tile = tile

    @classmethod
    def from_linear(cls, linear: nn.Linear, tile: int) -> Float8BlockwiseLinear:
        """Wrap an existing Linear, sharing its parameters."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new.tile = tile
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = blockwise_linear(x, self.weight, self.tile)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tile={self.tile}"
