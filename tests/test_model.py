"""Decoder shapes, attention equivalences, cached decoding and KV-cache accounting."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tinyseek.config import ModelConfig
from tinyseek.model import Transformer
from tinyseek.sizing import kv_cache_bytes_per_token

ATTENTION_KV_HEADS = {"mha": 4, "gqa": 2, "mqa": 1}


def tiny_model_config(attention: str = "mha", **fields) -> ModelConfig:
    base = dict(dim=64, n_layers=2, n_heads=4, inter_dim=128, max_seq_len=64, vocab_size=97)
    base.update(fields)
    return ModelConfig(attention=attention, n_kv_heads=ATTENTION_KV_HEADS[attention], **base)


def build(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("attention", ["mha", "gqa", "mqa"])
def test_forward_shape(attention):
    model = build(tiny_model_config(attention))
    tokens = torch.randint(0, 97, (3, 17))
    assert model(tokens).shape == (3, 17, 97)


@pytest.mark.parametrize("attention", ["mha", "gqa", "mqa"])
def test_kv_projection_sizes(attention):
    model = build(tiny_model_config(attention))
    n_kv_heads = ATTENTION_KV_HEADS[attention]
    assert model.layers[0].attn.wk.weight.shape == (n_kv_heads * 16, 64)
    assert model.layers[0].attn.wq.weight.shape == (64, 64)


def test_gqa_with_all_heads_equals_mha():
    mha = build(tiny_model_config("mha"))
    gqa_cfg = tiny_model_config("gqa")
    gqa_cfg.n_kv_heads = 4
    gqa = Transformer(gqa_cfg).eval()
    gqa.load_state_dict(mha.state_dict())
    tokens = torch.randint(0, 97, (2, 24))
    assert_close(gqa(tokens), mha(tokens), rtol=0, atol=0)


def test_gqa_equals_mha_with_repeated_heads():
    # GQA is MHA whose key/value heads are copies shared within each group of query heads.
    gqa = build(tiny_model_config("gqa"))
    mha = Transformer(tiny_model_config("mha")).eval()
    state = gqa.state_dict()
    for name in list(state):
        if name.endswith(("attn.wk.weight", "attn.wv.weight")):
            heads = state[name].view(2, 16, 64)  # (K, D, dim)
            state[name] = heads.repeat_interleave(2, dim=0).reshape(64, 64)
    mha.load_state_dict(state)
    tokens = torch.randint(0, 97, (2, 24))
    assert_close(mha(tokens), gqa(tokens), rtol=1e-5, atol=1e-5)


def test_forward_is_causal():
    model = build(tiny_model_config("gqa"))
    tokens = torch.randint(0, 97, (1, 20))
    changed = tokens.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 97
    assert_close(model(tokens)[:, :12], model(changed)[:, :12])


@pytest.mark.parametrize("attention", ["mha", "gqa", "mqa"])
@pytest.mark.parametrize("prompt_len", [1, 7, 30])
def test_cached_decoding_matches_full_forward(attention, prompt_len):
    model = build(tiny_model_config(attention))
    tokens = torch.randint(0, 97, (2, 40))
    full = model(tokens)

    cache = model.make_cache(batch_size=2)
    steps = [model(tokens[:, :prompt_len], cache)]
    for t in range(prompt_len, 40):
        steps.append(model(tokens[:, t : t + 1], cache))
    assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cached_chunked_prefill_matches_full_forward():
    model = build(tiny_model_config("gqa"))
    tokens = torch.randint(0, 97, (2, 40))
    cache = model.make_cache(batch_size=2)
    chunks = [
        model(tokens[:, :10], cache),
        model(tokens[:, 10:25], cache),
        model(tokens[:, 25:], cache),
    ]
    assert_close(torch.cat(chunks, dim=1), model(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["mha", "gqa", "mqa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_measured_cache_bytes_equal_analytic(attention, dtype):
    cfg = tiny_model_config(attention)
    model = build(cfg)
    cache = model.make_cache(batch_size=3, dtype=dtype)
    model(torch.randint(0, 97, (3, 11)), cache)
    model(torch.randint(0, 97, (3, 1)), cache)
    assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg, dtype)
    assert cache.nbytes == 3 * 12 * kv_cache_bytes_per_token(cfg, dtype)


def test_analytic_cache_bytes_follow_table_formula():
    cfg = tiny_model_config("gqa")
    # 2 * n_kv_heads * head_dim elements per layer, times layers, times bytes per element.
    assert kv_cache_bytes_per_token(cfg, torch.bfloat16) == 2 * 2 * 16 * 2 * 2
    mha = tiny_model_config("mha")
    assert kv_cache_bytes_per_token(mha, torch.float32) == 2 * 4 * 16 * 2 * 4


def test_cache_overflow_rejected():
    model = build(tiny_model_config())
    cache = model.make_cache(batch_size=1, max_seq_len=8)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(torch.randint(0, 97, (1, 9)), cache)


def test_sequence_beyond_max_seq_len_rejected():
    model = build(tiny_model_config())
    with pytest.raises(ValueError, match="exceeds model.max_seq_len=64"):
        model(torch.randint(0, 97, (1, 65)))


def test_same_seed_same_weights():
    a = build(tiny_model_config(), seed=3).state_dict()
    b = build(tiny_model_config(), seed=3).state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_tied_embeddings_share_weight():
    model = build(tiny_model_config(tie_embeddings=True))
    assert model.head.weight is model.embed.weight
