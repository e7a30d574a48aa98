"""Swap a model's eligible Linears for FP8 ones, keeping DeepSeek-V3's exclusions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch.nn as nn

from tinyseek.model.moe import Experts, Gate
from tinyseek.model.norm import RMSNorm
from tinyseek.precision.blockwise import Float8BlockwiseLinear

log = logging.getLogger(__name__)

FP8_RECIPES = ("tensorwise", "rowwise", "blockwise")
GEMM_MULTIPLE = 16
"""FP8 GEMMs (torch._scaled_mm) need both Linear dimensions to be multiples of 16."""


@dataclass
class Fp8Plan:
    """The layers an FP8 recipe converts, and the reason for each layer it leaves alone."""

    recipe: str
    converted: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)


def plan_fp8(model: nn.Module, recipe: str, tile: int) -> Fp8Plan:
    """Decide for every weight-carrying module whether recipe can run it in FP8."""
    if recipe not in FP8_RECIPES:
        raise ValueError(f"FP8 recipe {recipe!r} is unknown; choose one of {FP8_RECIPES}")
    plan = Fp8Plan(recipe)
    for name, module in model.named_modules():
        reason = _exclusion_reason(name, module, recipe, tile)
        if reason is None and isinstance(module, nn.Linear):
            plan.converted.append(name)
        elif reason is not None:
            plan.excluded[name] = reason
    return plan


def _exclusion_reason(name: str, module: nn.Module, recipe: str, tile: int) -> str | None:
    """Why module stays in high precision, or None for a convertible Linear or a container."""
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, RMSNorm):
        return "norm"
    if isinstance(module, Gate):
        return "MoE router"
    if isinstance(module, Experts):
        # TODO: run the routed experts' grouped GEMMs through the FP8 recipe too.
        return "grouped expert GEMM, not converted yet"
    if not isinstance(module, nn.Linear):
        return None
    if name == "head" or name.endswith(".head"):
        return "output head"
    k, n = module.in_features, module.out_features
    if recipe == "blockwise" and k % tile != 0:
        return f"in_features {k} is not a multiple of the {tile}-wide tile"
    if k % GEMM_MULTIPLE != 0 or n % GEMM_MULTIPLE != 0:
        return f"shape {k}x{n} is not a multiple of {GEMM_MULTIPLE}"
    return None


def convert_to_fp8(model: nn.Module, recipe: str, tile: int = 128) -> Fp8Plan:
    """Convert model in place to an FP8 recipe and log what stayed in high precision."""
    plan = plan_fp8(model, recipe, tile)
    if recipe == "blockwise":
        for name in plan.converted:
            parent, child = _parent(model, name)
            setattr(parent, child, Float8BlockwiseLinear.from_linear(getattr(parent, child), tile))
    else:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        chosen = set(plan.converted)
        convert_to_float8_training(
            model,
            config=Float8LinearConfig.from_recipe_name(recipe),
            module_filter_fn=lambda module, fqn: fqn in chosen,
        )

    excluded = ", ".join(f"{name} ({why})" for name, why in plan.excluded.items())
    log.info(
        "FP8 %s: %d Linear layers converted; kept in high precision, with the attention core: %s",
        recipe,
        len(plan.converted),
        excluded or "nothing",
    )
    return plan


def fp8_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Return the model's FP8 Linear layers by name, whichever recipe converted them."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _is_fp8(module)
    }


def _is_fp8(module: nn.Module) -> bool:
    if isinstance(module, Float8BlockwiseLinear):
        return True
    from torchao.float8.float8_linear import Float8Linear

    return isinstance(module, Float8Linear)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Return the module that contains the child called name, and the attribute name."""
    path, _, child = name.rpartition(".")
    return (model.get_submodule(path) if path else model), child
