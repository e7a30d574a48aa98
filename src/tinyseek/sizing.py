"""Analytic sizes: parameters, KV-cache elements and bytes per token, training FLOPs per token."""

from __future__ import annotations

from pathlib import Path

import torch

from tinyseek.config import ModelConfig


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
    """Training FLOPs per token: 6 per matmul weight plus the attention scores and mixing.

    Parameters count as activated ones, so an MoE model is charged for its routed experts
    only. The attention term is 6 * n_layers * n_heads * (qk width + v width) * seq_len. It counts
    forward and backward of QK^T and AV at full, unmasked cost, which is PaLM's
    12 * L * H * Q * T when the widths are equal. The embedding lookup is not a matmul, so
    its weights are excluded unless the head shares them.
    """
    # A token only runs its activated experts, so MoE counts activated parameters.
    matmul_params = count_active_parameters(model)
    if not cfg.tie_embeddings:
        matmul_params -= model.embed.weight.numel()
    if cfg.attention == "mla":
        head_widths = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim
    else:
        head_widths = 2 * cfg.resolved_head_dim
    attention = 6 * cfg.n_layers * cfg.n_heads * head_widths * seq_len
    return 6.0 * matmul_params + attention


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


def main() -> None:
    """Print the KV cache per token of a model preset: `python -m tinyseek.sizing model=...`."""
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
        lines = kv_cache_report(sizing_cfg.model) + parameter_report(sizing_cfg.model)
        print("\n".join(lines))

    run()


if __name__ == "__main__":
    main()
