"""Analytic sizes and costs: parameters, KV cache per token, training FLOPs, GPU-hours, MFU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tinyseek.config import CostConfig, ModelConfig


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_cache_elements_per_token_per_layer(cfg: ModelConfig, absorbed: bool = True) -> int:
    """Cached elements per token in one layer, as in DeepSeek-V2's Table 1.

    MHA 2 * n_heads * head_dim, GQA 2 * n_kv_heads * head_dim, MQA 2 * head_dim, and MLA
    kv_lora_rank + qk_rope_head_dim. MLA's naive decoding (absorbed=False) caches full
    per-head keys and values instead: n_heads * (qk_nope + qk_rope + v head dims).
    """
    if cfg.attention != "mla":
        return 2 * cfg.n_kv_heads * cfg.resolved_head_dim
    if absorbed:
        return cfg.kv_lora_rank + cfg.qk_rope_head_dim
    return cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)


def kv_cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype, absorbed: bool = True) -> int:
    """Cache bytes per token summed over all layers, in the cache dtype."""
    elements = kv_cache_elements_per_token_per_layer(cfg, absorbed) * cfg.n_layers
    return elements * element_size(dtype)


def mha_kv_cache_elements_per_token(cfg: ModelConfig) -> int:
    """Cached elements per token, all layers, of MHA with the same n_heads and head_dim."""
    return 2 * cfg.n_heads * cfg.resolved_head_dim * cfg.n_layers


def mha_kv_cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Cache bytes per token of MHA with the same n_heads, head_dim and layers."""
    return mha_kv_cache_elements_per_token(cfg) * element_size(dtype)


def count_parameters(module: torch.nn.Module) -> int:
    """Distinct parameters of a module (a tied weight counts once)."""
    return sum(p.numel() for p in module.parameters())


def count_active_parameters(model: torch.nn.Module) -> int:
    """Parameters that one token uses: all, less the routed experts it is not sent to.

    The embedding and head count in full, and so does each MoE router, which scores every
    expert for every token.
    """
    inactive = sum(
        (moe.n_experts - moe.top_k) * moe.experts.params_per_expert() for moe in model.moe_layers()
    )
    return count_parameters(model) - inactive


def parameter_counts(cfg: ModelConfig) -> tuple[int, int]:
    """Total and activated parameters of a config, built on the meta device (no memory)."""
    from tinyseek.model import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return count_parameters(model), count_active_parameters(model)


def train_flops_per_token(model: torch.nn.Module, cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token of a built model: the counting rules of flops_per_token."""
    return flops_per_token(model, cfg, seq_len).total


def parameter_report(cfg: ModelConfig) -> list[str]:
    """Lines that give a model's total and activated parameters, for the sizing command."""
    if cfg.vocab_size is None:
        return [
            "parameters: set model.vocab_size (training takes it from the tokenizer) to count "
            "them, for example model.vocab_size=2048"
        ]
    total, active = parameter_counts(cfg)
    return [
        f"parameters: {total:,} total, {active:,} activated per token "
        f"(ffn {cfg.ffn}, embedding and head included)"
    ]


def _mla_widths(cfg: ModelConfig) -> str:
    if cfg.attention != "mla":
        return ""
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    return (
        f" (MLA query/key heads {qk} = {cfg.qk_nope_head_dim} + {cfg.qk_rope_head_dim} RoPE, "
        f"values {cfg.v_head_dim}; the MHA comparison uses head_dim {cfg.resolved_head_dim})"
    )


def kv_cache_report(cfg: ModelConfig) -> list[str]:
    """Lines that describe a model's KV cache per token, for the sizing command."""
    per_layer = kv_cache_elements_per_token_per_layer(cfg)
    total = per_layer * cfg.n_layers
    mha = mha_kv_cache_elements_per_token(cfg)
    lines = [
        f"model {cfg.name}: attention {cfg.attention}, {cfg.n_layers} layers, "
        f"{cfg.n_heads} heads of {cfg.resolved_head_dim} dims" + _mla_widths(cfg),
        f"KV cache per token: {per_layer:,} elements per layer, {total:,} in all layers",
    ]
    for dtype in (torch.bfloat16, torch.float32):
        size = kv_cache_bytes_per_token(cfg, dtype)
        name = str(dtype).removeprefix("torch.")
        lines.append(f"  {name}: {size:,} bytes ({size / 1024:.1f} KiB)")
    if cfg.attention == "mla":
        naive = kv_cache_elements_per_token_per_layer(cfg, absorbed=False) * cfg.n_layers
        lines.append(f"MLA naive decoding (full keys and values): {naive:,} elements")
    lines.append(
        f"MHA of the same shape: {mha:,} elements ({mha / total:.2f}x this model's cache, "
        f"this one is {100 * total / mha:.2f} % of it)"
    )
    return lines


SECONDS_PER_HOUR = 3600.0


@dataclass
class FlopsPerToken:
    """Training FLOPs per token, split by counting rule."""

    matmul_params: int
    """Activated parameters that enter a matmul: all activated ones less the input embedding."""
    matmul: float
    """6 * matmul_params: forward (2) and backward (4) FLOPs per weight."""
    attention: float
    """Causal attention scores and mixing, forward and backward, at the context length."""

    @property
    def total(self) -> float:
        return self.matmul + self.attention


def flops_per_token(model: torch.nn.Module, cfg: ModelConfig, seq_len: int) -> FlopsPerToken:
    """Training FLOPs per token: 6 * N_active plus causal attention.

    Parameters count as activated ones, so an MoE model is charged for its routed experts
    only. The embedding lookup is not a matmul, so its weights are excluded unless the head
    shares them. The attention term is 3 * n_layers * n_heads * (qk width + v width) *
    seq_len: QK^T and AV cost 2 * width FLOPs per query and key in the forward pass and twice
    that backward, and a causal query attends to seq_len / 2 keys on average.
    """
    matmul_params = count_active_parameters(model)
    if not cfg.tie_embeddings:
        matmul_params -= model.embed.weight.numel()
    if cfg.attention == "mla":
        head_widths = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim
    else:
        head_widths = 2 * cfg.resolved_head_dim
    attention = 3.0 * cfg.n_layers * cfg.n_heads * head_widths * seq_len
    return FlopsPerToken(matmul_params, 6.0 * matmul_params, attention)


def cost_flops_per_token(cfg: ModelConfig, seq_len: int) -> FlopsPerToken:
    """flops_per_token of a config, with the model built on the meta device."""
    from tinyseek.model import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return flops_per_token(model, cfg, seq_len)


def gpu_hours_for(tokens: float, flops_per_token: float, peak_flops: float, mfu: float) -> float:
    """GPU-hours to train `tokens` at `mfu` of a per-GPU peak."""
    return tokens * flops_per_token / (mfu * peak_flops * SECONDS_PER_HOUR)


def implied_mfu(
    tokens: float, flops_per_token: float, peak_flops: float, gpu_hours: float
) -> float:
    """MFU that a published GPU-hour figure implies: model FLOPs over peak FLOPs x time."""
    return tokens * flops_per_token / (gpu_hours * SECONDS_PER_HOUR * peak_flops)


def device_hours_for(tokens: float, tokens_per_s: float, devices: int = 1) -> float:
    """Device-hours to train `tokens` at a measured throughput shared by `devices`."""
    return tokens / tokens_per_s * devices / SECONDS_PER_HOUR


def cost_report(model: ModelConfig, cost: CostConfig) -> list[str]:
    """Lines of the cost model: FLOPs per token with their rules, then the projections."""
    if model.vocab_size is None:
        return ["cost: set model.vocab_size to count FLOPs, for example model.vocab_size=2048"]
    seq_len = cost.seq_len or model.max_seq_len
    flops = cost_flops_per_token(model, seq_len)
    lines = [
        f"training FLOPs per token at context {seq_len:,}: {flops.total:.4g}",
        f"  matmuls 6 * N_active = 6 * {flops.matmul_params:,} = {flops.matmul:.4g} "
        "(forward 2, backward 4 per activated weight; input embedding excluded, router included)",
        f"  attention 3 * n_layers * n_heads * (qk + v head widths) * seq_len = "
        f"{flops.attention:.4g} (causal: seq_len / 2 keys per query on average; "
        f"+{100 * flops.attention / flops.matmul:.1f} % over 6 * N_active)",
    ]
    if cost.tokens_per_s is not None and cost.tokens is not None:
        hours = device_hours_for(cost.tokens, cost.tokens_per_s, cost.devices)
        lines.append(
            f"measured run: {cost.tokens:.4g} tokens at {cost.tokens_per_s:,.0f} tokens/s on "
            f"{cost.devices} device(s) = {hours:.4g} device-hours"
        )
    if cost.tokens is None or (cost.mfu is None and cost.gpu_hours is None):
        return lines

    peak = f"{cost.gpu} at {cost.peak / 1e12:,.0f} TFLOP/s"
    mfu = cost.mfu
    if cost.gpu_hours is not None:
        mfu_6nd = implied_mfu(cost.tokens, flops.matmul, cost.peak, cost.gpu_hours)
        mfu_all = implied_mfu(cost.tokens, flops.total, cost.peak, cost.gpu_hours)
        lines.append(
            f"implied MFU of {cost.gpu_hours:,.4g} GPU-hours for {cost.tokens:.4g} tokens on "
            f"{peak}: {100 * mfu_6nd:.1f} % from 6 * N_active * D alone, "
            f"{100 * mfu_all:.1f} % with attention"
        )
        mfu = mfu if mfu is not None else mfu_all
    hours = gpu_hours_for(cost.tokens, flops.total, cost.peak, mfu)
    lines.append(
        f"projection: {cost.tokens:.4g} tokens on {peak} at {100 * mfu:.1f} % MFU = "
        f"{_amount(hours)} GPU-hours, ${_amount(hours * cost.price_per_hour)} at "
        f"${cost.price_per_hour:g} per GPU-hour"
    )
    return lines


def _amount(value: float) -> str:
    """Whole numbers from 1,000 up (with millions spelled out), 4 significant digits below."""
    if value >= 1e6:
        return f"{value:,.0f} ({value / 1e6:.3f} M)"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def main() -> None:
    """Print a preset's KV cache, parameters and training cost: `python -m tinyseek.sizing`."""
    import hydra

    from tinyseek.config import register_configs, to_object
    from tinyseek.runtime import exit_on_invalid_input

    register_configs()
    # NOTE: conf/ sits at the repository root, so this command needs a source checkout
    # (an editable install), like the pipeline entry points.
    conf_dir = Path(__file__).resolve().parents[2] / "conf"

    @hydra.main(version_base="1.3", config_path=str(conf_dir), config_name="sizing")
    @exit_on_invalid_input
    def run(cfg) -> None:
        sizing_cfg = to_object(cfg)
        model = sizing_cfg.model
        lines = kv_cache_report(model) + parameter_report(model)
        lines += cost_report(model, sizing_cfg.cost)
        print("\n".join(lines))

    run()


if __name__ == "__main__":
    main()
