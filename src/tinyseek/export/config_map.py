"""The mapping between tinyseek's ModelConfig and transformers' Llama and DeepseekV3 configs.

Dense MHA, GQA and MQA models map to `LlamaConfig`; MLA models, dense or MoE, map to
`DeepseekV3Config` (transformers 5). A variant that neither class can compute the same way
is rejected with the reason.
"""

from __future__ import annotations

from typing import Any

from transformers import DeepseekV3Config, LlamaConfig, PretrainedConfig

from tinyseek.config import ModelConfig

# transformers' DeepseekV3 builds the q_a and kv_a RMSNorms with this fixed epsilon.
_DEEPSEEK_LATENT_NORM_EPS = 1e-6


def hf_architecture(cfg: ModelConfig) -> str:
    """Return the transformers class name a model exports to, or raise why it cannot."""
    check_exportable(cfg)
    return "DeepseekV3ForCausalLM" if cfg.attention == "mla" else "LlamaForCausalLM"


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ValueError when transformers' Llama or DeepseekV3 cannot express cfg."""
    if cfg.vocab_size is None:
        raise ValueError("model.vocab_size is unset: export a trained run, whose config has it.")
    if cfg.attention != "mla":
        if cfg.ffn == "moe":
            raise ValueError(
                f"attention={cfg.attention} with ffn=moe has no transformers counterpart: "
                "LlamaForCausalLM is dense and DeepseekV3ForCausalLM always uses MLA. Export "
                "attention=mla ffn=moe or a dense MHA/GQA/MQA model."
            )
        return
    if cfg.norm_eps != _DEEPSEEK_LATENT_NORM_EPS:
        raise ValueError(
            f"model.norm_eps={cfg.norm_eps} cannot be exported with MLA: transformers' "
            f"DeepseekV3 fixes the epsilon of the query and KV latent norms at "
            f"{_DEEPSEEK_LATENT_NORM_EPS}, so use model.norm_eps={_DEEPSEEK_LATENT_NORM_EPS}."
        )
    if cfg.ffn == "moe":
        _check_moe_exportable(cfg)


def _check_moe_exportable(cfg: ModelConfig) -> None:
    if cfg.score_func != "sigmoid":
        raise ValueError(
            f"model.score_func={cfg.score_func} cannot be exported: transformers' DeepseekV3 "
            "router always uses sigmoid scores (DeepSeek-V2's softmax router has no "
            "DeepseekV3 form), so train with model.score_func=sigmoid."
        )
    if cfg.n_shared_experts < 1:
        raise ValueError(
            f"model.n_shared_experts={cfg.n_shared_experts} cannot be exported: transformers' "
            "DeepseekV3 MoE always runs shared experts, so use at least 1."
        )
    if cfg.n_expert_groups > 1 and cfg.n_routed_experts // cfg.n_expert_groups < 2:
        raise ValueError(
            f"model.n_expert_groups={cfg.n_expert_groups} leaves one expert per group, but "
            "transformers' DeepseekV3 scores each group by its top-2 experts: use groups of "
            "at least 2 experts, or n_expert_groups=1."
        )


def hf_config(cfg: ModelConfig) -> PretrainedConfig:
    """Build the transformers config of the model that computes what cfg's Transformer does."""
    check_exportable(cfg)
    common: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.inter_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "hidden_act": "silu",
        "attention_bias": False,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    if cfg.attention != "mla":
        return LlamaConfig(
            **common,
            num_key_value_heads=cfg.n_kv_heads,
            head_dim=cfg.resolved_head_dim,
            mlp_bias=False,
        )
    moe = cfg.ffn == "moe"
    return DeepseekV3Config(
        **common,
        num_key_value_heads=cfg.n_heads,
        q_lora_rank=cfg.q_lora_rank or None,
        kv_lora_rank=cfg.kv_lora_rank,
        qk_nope_head_dim=cfg.qk_nope_head_dim,
        qk_rope_head_dim=cfg.qk_rope_head_dim,
        v_head_dim=cfg.v_head_dim,
        # tinyseek rotates interleaved channel pairs, which is DeepseekV3's rope_interleave.
        rope_interleave=True,
        first_k_dense_replace=cfg.n_dense_layers if moe else cfg.n_layers,
        n_routed_experts=cfg.n_routed_experts,
        n_shared_experts=cfg.n_shared_experts,
        num_experts_per_tok=cfg.n_activated_experts,
        moe_intermediate_size=cfg.moe_inter_dim,
        routed_scaling_factor=cfg.route_scale,
        n_group=cfg.n_expert_groups,
        topk_group=cfg.n_limited_groups,
        norm_topk_prob=True,
        num_mtp_layers=0,
    )


def model_config_from_hf(hf_cfg: PretrainedConfig, name: str = "imported") -> ModelConfig:
    """Build the tinyseek ModelConfig for a Llama or DeepseekV3 transformers config.

    Raises ValueError for a config that tinyseek's layers cannot compute the same way.
    """
    model_type = getattr(hf_cfg, "model_type", None)
    if model_type not in ("llama", "deepseek_v3"):
        raise ValueError(
            f"model_type={model_type!r} cannot be imported: tinyseek reads llama and "
            "deepseek_v3 checkpoints only."
        )
    _check_importable(hf_cfg)
    common: dict[str, Any] = {
        "name": name,
        "dim": hf_cfg.hidden_size,
        "n_layers": hf_cfg.num_hidden_layers,
        "n_heads": hf_cfg.num_attention_heads,
        "inter_dim": hf_cfg.intermediate_size,
        "vocab_size": hf_cfg.vocab_size,
        "max_seq_len": hf_cfg.max_position_embeddings,
        "norm_eps": hf_cfg.rms_norm_eps,
        "rope_theta": float(hf_cfg.rope_parameters["rope_theta"]),
        "tie_embeddings": bool(hf_cfg.tie_word_embeddings),
        "init_std": hf_cfg.initializer_range,
    }
    if model_type == "llama":
        n_kv_heads = hf_cfg.num_key_value_heads
        attention = "mha" if n_kv_heads == hf_cfg.num_attention_heads else "gqa"
        attention = "mqa" if n_kv_heads == 1 and attention != "mha" else attention
        # None keeps tinyseek's default of dim // n_heads, as the exported config had it.
        default_head_dim = hf_cfg.hidden_size // hf_cfg.num_attention_heads
        head_dim = None if hf_cfg.head_dim == default_head_dim else hf_cfg.head_dim
        return ModelConfig(**common, attention=attention, n_kv_heads=n_kv_heads, head_dim=head_dim)
    moe = hf_cfg.first_k_dense_replace < hf_cfg.num_hidden_layers
    return ModelConfig(
        **common,
        attention="mla",
        ffn="moe" if moe else "dense",
        q_lora_rank=hf_cfg.q_lora_rank or 0,
        kv_lora_rank=hf_cfg.kv_lora_rank,
        qk_nope_head_dim=hf_cfg.qk_nope_head_dim,
        qk_rope_head_dim=hf_cfg.qk_rope_head_dim,
        v_head_dim=hf_cfg.v_head_dim,
        n_dense_layers=hf_cfg.first_k_dense_replace if moe else 1,
        n_routed_experts=hf_cfg.n_routed_experts,
        n_shared_experts=hf_cfg.n_shared_experts,
        n_activated_experts=hf_cfg.num_experts_per_tok,
        moe_inter_dim=hf_cfg.moe_intermediate_size,
        score_func="sigmoid",
        route_scale=hf_cfg.routed_scaling_factor,
        n_expert_groups=hf_cfg.n_group,
        n_limited_groups=hf_cfg.topk_group,
    )


def _check_importable(hf_cfg: PretrainedConfig) -> None:
    rope_type = (hf_cfg.rope_parameters or {}).get("rope_type", "default")
    problems = []
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (tinyseek has plain RoPE only)")
    if hf_cfg.hidden_act != "silu":
        problems.append(f"hidden_act={hf_cfg.hidden_act!r} (tinyseek's SwiGLU uses silu)")
    if getattr(hf_cfg, "attention_bias", False) or getattr(hf_cfg, "mlp_bias", False):
        problems.append("attention_bias or mlp_bias (tinyseek's projections have no bias)")
    if hf_cfg.model_type == "deepseek_v3":
        if hf_cfg.num_key_value_heads != hf_cfg.num_attention_heads:
            problems.append("num_key_value_heads != num_attention_heads")
        if hf_cfg.rms_norm_eps != _DEEPSEEK_LATENT_NORM_EPS:
            problems.append(
                f"rms_norm_eps={hf_cfg.rms_norm_eps} (tinyseek's latent norms would use it, "
                f"transformers' use {_DEEPSEEK_LATENT_NORM_EPS})"
            )
        if hf_cfg.first_k_dense_replace < hf_cfg.num_hidden_layers:
            if not hf_cfg.norm_topk_prob:
                problems.append("norm_topk_prob=False (tinyseek normalises sigmoid gates)")
            if hf_cfg.hidden_size % 8 or hf_cfg.moe_intermediate_size % 8:
                problems.append("hidden_size or moe_intermediate_size not a multiple of 8")
    if problems:
        raise ValueError(
            f"the {hf_cfg.model_type} config cannot be imported: {'; '.join(problems)}."
        )
