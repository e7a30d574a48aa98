"""Multi-head Latent Attention: absorbed and naive decoding, cache sizes, config checks."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import compose_config
from tinyseek.config import ModelConfig, to_object
from tinyseek.model import Transformer
from tinyseek.model.cache import KVCache, LatentCache
from tinyseek.sizing import (
    kv_cache_bytes_per_token,
    kv_cache_elements_per_token_per_layer,
    mha_kv_cache_elements_per_token,
)


def mla_config(q_lora_rank: int = 0, **fields) -> ModelConfig:
    base = dict(dim=64, n_layers=2, n_heads=4, inter_dim=128, max_seq_len=64, vocab_size=97)
    base.update(fields)
    return ModelConfig(attention="mla", q_lora_rank=q_lora_rank, **base)


def build(cfg: ModelConfig) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    # Random norm gains so the latent and query norms are exercised, not left at 1.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("kv_norm.weight", "q_norm.weight")):
                param.uniform_(0.5, 1.5)
    return model


def decode(
    model: Transformer, tokens: torch.Tensor, prompt_len: int, absorbed: bool
) -> torch.Tensor:
    cache = model.make_cache(batch_size=tokens.shape[0], absorbed=absorbed)
    steps = [model(tokens[:, :prompt_len], cache)]
    for t in range(prompt_len, tokens.shape[1]):
        steps.append(model(tokens[:, t : t + 1], cache))
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("q_lora_rank", [0, 24])
@pytest.mark.parametrize("prompt_len", [1, 6, 19, 40])
def test_absorbed_equals_naive_and_full(q_lora_rank, prompt_len):
    model = build(mla_config(q_lora_rank))
    tokens = torch.randint(0, 97, (2, 40))
    full = model(tokens)
    absorbed = decode(model, tokens, prompt_len, absorbed=True)
    naive = decode(model, tokens, prompt_len, absorbed=False)
    assert_close(naive, full, rtol=1e-5, atol=1e-5)
    assert_close(absorbed, full, rtol=1e-5, atol=1e-5)
    assert_close(absorbed, naive, rtol=1e-5, atol=1e-5)


def test_absorbed_chunked_prefill_matches_full():
    model = build(mla_config(16))
    tokens = torch.randint(0, 97, (3, 30))
    cache = model.make_cache(batch_size=3)
    chunks = [
        model(tokens[:, :9], cache),
        model(tokens[:, 9:20], cache),
        model(tokens[:, 20:], cache),
    ]
    assert_close(torch.cat(chunks, dim=1), model(tokens), rtol=1e-5, atol=1e-5)


def test_mla_with_unequal_head_dims():
    cfg = mla_config(0, qk_nope_head_dim=12, qk_rope_head_dim=6, v_head_dim=20, kv_lora_rank=40)
    model = build(cfg)
    tokens = torch.randint(0, 97, (1, 25))
    assert_close(decode(model, tokens, 5, absorbed=True), model(tokens), rtol=1e-5, atol=1e-5)


def test_absorbed_cache_holds_latent_only():
    model = build(mla_config())
    cache = model.make_cache(batch_size=1)
    assert all(isinstance(layer, LatentCache) for layer in cache.layers)
    assert cache.layers[0].latent.shape == (1, 64, 64)
    assert cache.layers[0].k_pe.shape == (1, 64, 8)
    naive = model.make_cache(batch_size=1, absorbed=False)
    assert all(isinstance(layer, KVCache) for layer in naive.layers)


@pytest.mark.parametrize("absorbed", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mla_measured_bytes_equal_analytic(absorbed, dtype):
    cfg = mla_config(8)
    model = build(cfg)
    cache = model.make_cache(batch_size=2, dtype=dtype, absorbed=absorbed)
    model(torch.randint(0, 97, (2, 13)), cache)
    model(torch.randint(0, 97, (2, 1)), cache)
    assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg, dtype, absorbed=absorbed)


def test_mla_analytic_elements_follow_formula():
    cfg = mla_config()
    assert kv_cache_elements_per_token_per_layer(cfg) == 64 + 8
    assert kv_cache_elements_per_token_per_layer(cfg, absorbed=False) == 4 * (16 + 8 + 16)
    assert mha_kv_cache_elements_per_token(cfg) == 2 * 4 * 16 * 2


def test_deepseek_v3_kv_cache_size():
    cfg = to_object(compose_config("sizing", ["model=deepseek_v3_671b"])).model
    assert cfg.attention == "mla"
    assert kv_cache_elements_per_token_per_layer(cfg) * cfg.n_layers == 35_136
    assert kv_cache_bytes_per_token(cfg, torch.bfloat16) / 1024 == pytest.approx(68.625)
    assert mha_kv_cache_elements_per_token(cfg) == 1_998_848


def test_sizing_command_prints_deepseek_figures():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tinyseek.sizing", "model=deepseek_v3_671b"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "35,136 in all layers" in out
    assert "(68.6 KiB)" in out
    assert "MHA of the same shape: 1,998,848 elements" in out


def test_presets_keep_deepseek_ratios():
    for preset in ("tiny", "small"):
        cfg = to_object(compose_config("train", [f"model={preset}", "attention=mla"])).model
        head_dim = cfg.resolved_head_dim
        assert cfg.kv_lora_rank == 4 * head_dim, preset
        assert cfg.qk_rope_head_dim == head_dim // 2, preset
        assert cfg.qk_nope_head_dim == head_dim, preset
        assert cfg.v_head_dim == head_dim, preset


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.qk_rope_head_dim=7", r"model.qk_rope_head_dim=7 is odd"),
        ("model.kv_lora_rank=0", r"model.kv_lora_rank=0 is invalid"),
        ("model.kv_lora_rank=-4", r"model.kv_lora_rank=-4 is invalid"),
        ("model.q_lora_rank=-1", r"model.q_lora_rank=-1 is invalid"),
        ("model.qk_nope_head_dim=0", r"model.qk_nope_head_dim=0 is invalid"),
        ("model.qk_rope_head_dim=0", r"model.qk_rope_head_dim=0 is invalid"),
        ("model.v_head_dim=0", r"model.v_head_dim=0 is invalid"),
    ],
)
def test_impossible_mla_config_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        to_object(compose_config("train", ["attention=mla", override]))


def test_mla_fields_ignored_for_other_attention():
    cfg = to_object(compose_config("train", ["attention=gqa", "model.qk_rope_head_dim=7"]))
    assert cfg.model.attention == "gqa"
