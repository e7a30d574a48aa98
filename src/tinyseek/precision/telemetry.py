"""FP8 telemetry: saturation, underflow, amax and SQNR of every FP8 GEMM, sampled every N steps."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn as nn

from tinyseek.precision.convert import Fp8Plan, fp8_layers
from tinyseek.precision.quantise import (
    E4M3_MAX,
    quantisation_stats,
    quantise_blocks,
    quantise_tiles,
    sqnr_db,
)

OPERANDS = ("input", "weight", "grad")
GEMMS = ("fwd", "dgrad", "wgrad")


def operand_stats(x: torch.Tensor, recipe: str, tile: int, is_weight: bool) -> dict[str, float]:
    """Quantise a 2-D operand x the way recipe does and measure what the cast lost.

    Tensorwise uses one scale per tensor, rowwise one per row, blockwise 1 x tile tiles for
    activations and gradients and tile x tile blocks for weights.
    """
    # NOTE: for the torchao recipes the backward casts scale along other axes; the forward
    # axes stand in for them here.
    x = x.float()
    if recipe == "tensorwise":
        scale = x.abs().amax().clamp_min(1e-12) / E4M3_MAX
        q = (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        return quantisation_stats(x, scale, q)
    if recipe == "rowwise":
        q, scale = quantise_tiles(x, x.shape[1])  # (M, K), (M, 1)
        return quantisation_stats(x, scale, q)
    if is_weight:
        q, block_scale = quantise_blocks(x, tile)
        scale = block_scale.repeat_interleave(tile, 0)[: x.shape[0]].repeat_interleave(tile, 1)
        return quantisation_stats(x, scale, q)
    padded = torch.nn.functional.pad(x, (0, -x.shape[1] % tile))
    q, tile_scale = quantise_tiles(padded, tile)
    scale = tile_scale.repeat_interleave(tile, 1)
    return quantisation_stats(padded, scale, q)


class _Probe:
    """Hooks on one FP8 Linear that keep its input, output and gradients for one step."""

    def __init__(self, layer: nn.Linear):
        self.layer = layer
        self.saved: dict[str, torch.Tensor] = {}
        self.handles = [
            layer.register_forward_hook(self._forward),
            layer.register_full_backward_hook(self._backward),
        ]

    def _forward(self, module, inputs, output) -> None:
        self.saved["x"] = inputs[0].detach()
        self.saved["y"] = output.detach()

    def _backward(self, module, grad_input, grad_output) -> None:
        self.saved["dy"] = grad_output[0].detach()
        if grad_input[0] is not None:
            self.saved["dx"] = grad_input[0].detach()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def layer_telemetry(
    layer: nn.Linear, saved: dict[str, torch.Tensor], recipe: str, tile: int
) -> dict[str, float]:
    """SQNR of the three GEMMs against a float64 recomputation, and each operand's cast."""
    weight = layer.weight.detach().double()  # (N, K)
    x = saved["x"].reshape(-1, layer.in_features).double()  # (M, K)
    dy = saved["dy"].reshape(-1, layer.out_features).double()  # (M, N)

    out: dict[str, float] = {
        "sqnr_fwd_db": sqnr_db(x @ weight.t(), saved["y"].reshape(x.shape[0], -1)),
    }
    if "dx" in saved:
        out["sqnr_dgrad_db"] = sqnr_db(dy @ weight, saved["dx"].reshape(x.shape[0], -1))
    if layer.weight.grad is not None:
        out["sqnr_wgrad_db"] = sqnr_db(dy.t() @ x, layer.weight.grad)

    operands = {"input": (x, False), "weight": (weight, True), "grad": (dy, False)}
    for operand, (value, is_weight) in operands.items():
        for stat, number in operand_stats(value, recipe, tile, is_weight).items():
            out[f"{stat}_{operand}"] = number
    return out


class FP8Telemetry(L.Callback):
    """Every every_n_steps, measures each FP8 layer and logs fp8/<layer>/<stat> and aggregates.

    The sampled step pays for float64 recomputations of its GEMMs; the others pay nothing.
    """

    def __init__(self, plan: Fp8Plan, tile: int, every_n_steps: int):
        self.plan = plan
        self.recipe = plan.recipe
        self.tile = tile
        self.every_n_steps = every_n_steps
        self.samples = 0
        self.worst: dict[str, float] = {}
        self.sums: dict[str, float] = {}
        self._probes: dict[str, _Probe] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "worst": self.worst, "sums": self.sums}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.samples = state_dict["samples"]
        self.worst = dict(state_dict["worst"])
        self.sums = dict(state_dict["sums"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            layers = fp8_layers(pl_module)
            self._probes = {name: _Probe(layer) for name, layer in layers.items()}

    def on_after_backward(self, trainer, pl_module) -> None:
        if not self._probes:
            return
        per_layer = {
            name: layer_telemetry(probe.layer, probe.saved, self.recipe, self.tile)
            for name, probe in self._probes.items()
            if "dy" in probe.saved
        }
        for probe in self._probes.values():
            probe.remove()
        self._probes = {}

        step_summary = self._aggregate(per_layer)
        if trainer.is_global_zero:
            metrics = {
                f"fp8/{name.removeprefix('model.')}/{stat}": value
                for name, stats in per_layer.items()
                for stat, value in stats.items()
            }
            metrics.update({f"fp8/{stat}": value for stat, value in step_summary.items()})
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _aggregate(self, per_layer: dict[str, dict[str, float]]) -> dict[str, float]:
        """Worst value over layers for this step, folded into the run's worst and mean."""
        step: dict[str, float] = {}
        for stats in per_layer.values():
            for stat, value in stats.items():
                worse = min if stat.startswith("sqnr") else max
                step[stat] = worse(step.get(stat, value), value)
        for stat, value in step.items():
            worse = min if stat.startswith("sqnr") else max
            self.worst[stat] = worse(self.worst.get(stat, value), value)
            self.sums[stat] = self.sums.get(stat, 0.0) + value
        self.samples += 1
        return step

    def summary(self) -> dict[str, Any]:
        """Run-level telemetry for metrics.json: worst over all samples and mean of step worsts."""
        worst = {f"{stat}_worst": _finite_or_none(value) for stat, value in self.worst.items()}
        mean = {
            f"{stat}_mean": _finite_or_none(total / self.samples)
            for stat, total in self.sums.items()
        }
        return {
            "recipe": self.recipe,
            "tile": self.tile if self.recipe == "blockwise" else None,
            "layers_converted": len(self.plan.converted),
            "layers_excluded": len(self.plan.excluded),
            "telemetry_samples": self.samples,
            **dict(sorted({**worst, **mean}.items())),
        }


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity; a lossless GEMM's infinite SQNR becomes None."""
    return value if math.isfinite(value) else None
