"""Convert state dicts between tinyseek's Transformer and transformers' Llama and DeepseekV3.

Layouts that differ:
- RoPE: tinyseek rotates interleaved channel pairs (0, 1), (2, 3), ...; Llama rotates the
  half-split pairs (j, j + D/2). Exporting to Llama permutes the rows of each query and key
  head so that the half-split rotation acts on the same pairs. DeepseekV3 with
  `rope_interleave=True` rotates interleaved pairs, so MLA weights export unpermuted; an
  imported DeepseekV3 checkpoint with `rope_interleave=False` is permuted the other way.
- MoE experts: tinyseek stacks w1, w3 (E, D, I) and w2 (E, I, D) for grouped GEMMs;
  DeepseekV3 holds gate_up_proj (E, 2I, D) and down_proj (E, D, I) as Linear weights.
- The routing bias is `gate.bias` in tinyseek and `gate.e_score_correction_bias` there.
MTP modules have no place in either class, so the export leaves them out.
"""

from __future__ import annotations

import torch

from tinyseek.config import ModelConfig

Tensor = torch.Tensor


def interleaved_to_half_split(head_dim: int) -> Tensor:
    """Return the channel order that makes a half-split rotation act on interleaved pairs."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def _permute_heads(weight: Tensor, n_heads: int, order: Tensor) -> Tensor:
    """Reorder the output rows of each head of a projection weight (n_heads * D, in)."""
    per_head = weight.view(n_heads, -1, weight.shape[-1])  # (H, D, in)
    return per_head[:, order].reshape(weight.shape).contiguous()


def _permute_rope_rows(
    weight: Tensor, n_groups: int, nope_dim: int, rope_dim: int, order: Tensor
) -> Tensor:
    """Reorder the RoPE rows that end each of n_groups blocks of (nope_dim + rope_dim) rows."""
    blocks = weight.view(n_groups, nope_dim + rope_dim, -1).clone()  # (G, N + R, in)
    blocks[:, nope_dim:] = blocks[:, nope_dim:][:, order]
    return blocks.reshape(weight.shape)


def to_hf_state(cfg: ModelConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Convert a tinyseek Transformer state dict to transformers' parameter names and layouts."""
    out = {
        "model.embed_tokens.weight": state["embed.weight"],
        "model.norm.weight": state["norm.weight"],
        "lm_head.weight": state["head.weight"],
    }
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = state[src + "attn_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = state[src + "ffn_norm.weight"]
        if cfg.attention == "mla":
            out.update(_mla_to_hf(state, src + "attn.", dst + "self_attn."))
        else:
            out.update(_attention_to_hf(cfg, state, src + "attn.", dst + "self_attn."))
        if src + "ffn.gate.weight" in state:
            out.update(_moe_to_hf(state, src + "ffn.", dst + "mlp."))
        else:
            out.update(_swiglu_to_hf(state, src + "ffn.", dst + "mlp."))
    return {name: tensor.contiguous() for name, tensor in out.items()}


def _attention_to_hf(cfg: ModelConfig, state, src: str, dst: str) -> dict[str, Tensor]:
    order = interleaved_to_half_split(cfg.resolved_head_dim)
    return {
        dst + "q_proj.weight": _permute_heads(state[src + "wq.weight"], cfg.n_heads, order),
        dst + "k_proj.weight": _permute_heads(state[src + "wk.weight"], cfg.n_kv_heads, order),
        dst + "v_proj.weight": state[src + "wv.weight"],
        dst + "o_proj.weight": state[src + "wo.weight"],
    }


_MLA_NAMES = {
    "wq": "q_proj",
    "wq_a": "q_a_proj",
    "q_norm": "q_a_layernorm",
    "wq_b": "q_b_proj",
    "wkv_a": "kv_a_proj_with_mqa",
    "kv_norm": "kv_a_layernorm",
    "wkv_b": "kv_b_proj",
    "wo": "o_proj",
}


def _mla_to_hf(state, src: str, dst: str) -> dict[str, Tensor]:
    return {
        dst + f"{hf}.weight": state[src + f"{ours}.weight"]
        for ours, hf in _MLA_NAMES.items()
        if src + f"{ours}.weight" in state
    }


def _swiglu_to_hf(state, src: str, dst: str) -> dict[str, Tensor]:
    return {
        dst + "gate_proj.weight": state[src + "w1.weight"],
        dst + "up_proj.weight": state[src + "w3.weight"],
        dst + "down_proj.weight": state[src + "w2.weight"],
    }


def _moe_to_hf(state, src: str, dst: str) -> dict[str, Tensor]:
    gate = state[src + "experts.w1"].transpose(1, 2)  # (E, I, D)
    up = state[src + "experts.w3"].transpose(1, 2)
    out = {
        dst + "gate.weight": state[src + "gate.weight"],
        dst + "gate.e_score_correction_bias": state[src + "gate.bias"],
        dst + "experts.gate_up_proj": torch.cat([gate, up], dim=1),  # (E, 2I, D)
        dst + "experts.down_proj": state[src + "experts.w2"].transpose(1, 2),  # (E, D, I)
    }
    out.update(_swiglu_to_hf(state, src + "shared_experts.", dst + "shared_experts."))
    return out


def from_hf_state(
    cfg: ModelConfig, state: dict[str, Tensor], rope_interleave: bool = True
) -> dict[str, Tensor]:
    """Convert a transformers Llama or DeepseekV3 state dict to tinyseek's names and layouts.

    `rope_interleave` is DeepseekV3's config flag; Llama checkpoints are always half-split.
    """
    out = {
        "embed.weight": state["model.embed_tokens.weight"],
        "norm.weight": state["model.norm.weight"],
        "head.weight": state.get("lm_head.weight", state["model.embed_tokens.weight"]),
    }
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "attn_norm.weight"] = state[src + "input_layernorm.weight"]
        out[dst + "ffn_norm.weight"] = state[src + "post_attention_layernorm.weight"]
        if cfg.attention == "mla":
            out.update(_mla_from_hf(cfg, state, src + "self_attn.", dst + "attn.", rope_interleave))
        else:
            out.update(_attention_from_hf(cfg, state, src + "self_attn.", dst + "attn."))
        if src + "mlp.gate.weight" in state:
            out.update(_moe_from_hf(state, src + "mlp.", dst + "ffn."))
        else:
            out.update(_swiglu_from_hf(state, src + "mlp.", dst + "ffn."))
    return {name: tensor.contiguous() for name, tensor in out.items()}


def _attention_from_hf(cfg: ModelConfig, state, src: str, dst: str) -> dict[str, Tensor]:
    inverse = interleaved_to_half_split(cfg.resolved_head_dim).argsort()
    return {
        dst + "wq.weight": _permute_heads(state[src + "q_proj.weight"], cfg.n_heads, inverse),
        dst + "wk.weight": _permute_heads(state[src + "k_proj.weight"], cfg.n_kv_heads, inverse),
        dst + "wv.weight": state[src + "v_proj.weight"],
        dst + "wo.weight": state[src + "o_proj.weight"],
    }


def _mla_from_hf(cfg: ModelConfig, state, src: str, dst: str, interleave: bool):
    out = {
        dst + f"{ours}.weight": state[src + f"{hf}.weight"]
        for ours, hf in _MLA_NAMES.items()
        if src + f"{hf}.weight" in state
    }
    if interleave:
        return out
    # A half-split checkpoint: put the RoPE rows of the query and the shared key into
    # interleaved order, so tinyseek's rotation pairs the same channels.
    inverse = interleaved_to_half_split(cfg.qk_rope_head_dim).argsort()
    query = dst + ("wq.weight" if cfg.q_lora_rank == 0 else "wq_b.weight")
    out[query] = _permute_rope_rows(
        out[query], cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, inverse
    )
    out[dst + "wkv_a.weight"] = _permute_rope_rows(
        out[dst + "wkv_a.weight"], 1, cfg.kv_lora_rank, cfg.qk_rope_head_dim, inverse
    )
    return out


def _swiglu_from_hf(state, src: str, dst: str) -> dict[str, Tensor]:
    return {
        dst + "w1.weight": state[src + "gate_proj.weight"],
        dst + "w3.weight": state[src + "up_proj.weight"],
        dst + "w2.weight": state[src + "down_proj.weight"],
    }


def _moe_from_hf(state, src: str, dst: str) -> dict[str, Tensor]:
    gate, up = state[src + "experts.gate_up_proj"].chunk(2, dim=1)  # (E, I, D) each
    out = {
        dst + "gate.weight": state[src + "gate.weight"],
        dst + "gate.bias": state[src + "gate.e_score_correction_bias"],
        dst + "experts.w1": gate.transpose(1, 2),  # (E, D, I)
        dst + "experts.w3": up.transpose(1, 2),
        dst + "experts.w2": state[src + "experts.down_proj"].transpose(1, 2),  # (E, I, D)
    }
    out.update(_swiglu_from_hf(state, src + "shared_experts.", dst + "shared_experts."))
    return out
