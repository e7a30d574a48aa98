"""tinyseek against Hugging Face transformers at the same configuration: training tokens/s.

Dense MHA and GQA run against LlamaForCausalLM; MLA + MoE runs against
DeepseekV3ForCausalLM. Both sides time a forward and backward pass of the same batch,
interleaved A B A B, and the ratio is the median of the per-round ratios. Each pair runs
in FP32 and under BF16 autocast (FP32 master weights, as precision=bf16 trains); both
sides run under the same autocast.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import DeepseekV3ForCausalLM, LlamaConfig, LlamaForCausalLM

from benchmarks.common import interleave, median_ratio, model_config, random_batch, summarise_times
from tinyseek.config import ModelConfig
from tinyseek.export import hf_config
from tinyseek.sizing import count_parameters
from tinyseek.training.module import LanguageModel

log = logging.getLogger(__name__)

PAIRS = (("mha", "dense"), ("gqa", "dense"), ("mla", "moe"))
PRECISIONS = ("fp32", "bf16")
"""The precisions both libraries train in; FP8 has no transformers counterpart here."""


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def tinyseek_step(
    cfg: ModelConfig, batch: torch.Tensor, precision: str = "fp32"
) -> tuple[Callable[[], None], int]:
    """A forward and backward step of tinyseek's LanguageModel; returns it and its params."""
    torch.manual_seed(0)
    module = LanguageModel(cfg, optim_cfg=None, max_steps=1, grad_clip=0.0)
    module.train()
    moe = bool(module.moe_layers)

    def step() -> None:
        module.zero_grad(set_to_none=True)
        with _autocast(precision):
            loss = module.loss(batch)
            if moe:
                loss = loss + module.model.aux_loss()
        loss.backward()

    return step, count_parameters(module.model)


def hf_step(
    cfg: ModelConfig, batch: torch.Tensor, precision: str = "fp32"
) -> tuple[Callable[[], None], int, str]:
    """The same step for the transformers model; returns it, its params and the classes used."""
    torch.manual_seed(0)
    config = hf_config(cfg)
    config.use_cache = False
    model_class = LlamaForCausalLM if isinstance(config, LlamaConfig) else DeepseekV3ForCausalLM
    model = model_class(config)
    model.train()
    inputs, targets = batch[:, :-1], batch[:, 1:]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with _autocast(precision):
            logits = model(input_ids=inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()

    implementation = f"{model_class.__name__} (attention {config._attn_implementation}"
    if model_class is DeepseekV3ForCausalLM:
        implementation += f", experts {config._experts_implementation}"
    implementation += ")"
    return step, count_parameters(model), implementation


def run(
    size: str,
    batch_size: int,
    seq_len: int,
    rounds: int,
    steps: int,
    precisions: tuple[str, ...] = PRECISIONS,
) -> list[dict]:
    """Compare each pair in PAIRS at one model size and each precision; one row per pair."""
    batch = random_batch(batch_size, seq_len)
    tokens = batch_size * seq_len
    rows = []
    for precision in precisions:
        for attention, ffn in PAIRS:
            cfg = model_config(size, attention, ffn)
            ours, our_params = tinyseek_step(cfg, batch, precision)
            theirs, their_params, implementation = hf_step(cfg, batch, precision)
            log.info("peers %s %s-%s %s: %d rounds", size, attention, ffn, precision, rounds)
            times = interleave({"tinyseek": ours, "hf": theirs}, rounds=rounds, steps=steps)
            rows.append(
                {
                    "size": size,
                    "variant": f"{attention}-{ffn}",
                    "precision": precision,
                    "peer": implementation,
                    "params_tinyseek": our_params,
                    "params_hf": their_params,
                    "batch_size": batch_size,
                    "seq_len": seq_len,
                    "tinyseek": summarise_times(times["tinyseek"], tokens),
                    "hf": summarise_times(times["hf"], tokens),
                    # Ratio of tokens/s, tinyseek over transformers: HF's step time over ours.
                    "speedup": median_ratio(times["hf"], times["tinyseek"]),
                }
            )
    return rows
