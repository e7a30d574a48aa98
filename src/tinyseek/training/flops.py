"""Measured matmul peak of the current machine, the denominator of MFU."""

from __future__ import annotations

import time

import torch


def measure_peak_flops(
    dtype: torch.dtype, device: torch.device, size: int = 1024, seconds: float = 0.5
) -> float:
    """FLOP/s of a square matmul in `dtype`, the best of repeated timings over about `seconds`.

    NOTE: this is the machine's achievable dense matmul rate in this process, not a vendor
    peak, so MFU computed against it reads higher than against datasheet figures.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    flops = 2.0 * size**3
    best = float("inf")
    deadline = time.perf_counter() + seconds
    torch.matmul(a, b)  # warm-up
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return flops / best
