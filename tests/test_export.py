"""Export to and import from transformers: parity of logits and greedy tokens, round trips."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, DeepseekV3ForCausalLM, MistralConfig

from tests.conftest import REPO, tiny_train_config
from tinyseek.config import ModelConfig
from tinyseek.data.shards import load_meta, load_tokens
from tinyseek.evaluation.loader import load_model, load_run_config
from tinyseek.export import (
    export_model,
    hf_architecture,
    hf_config,
    import_model,
    load_hf_weights,
    model_config_from_hf,
)
from tinyseek.export.weights import interleaved_to_half_split
from tinyseek.model import Transformer
from tinyseek.training.run import train

VARIANTS = {
    "mha": dict(attention="mha"),
    "gqa": dict(attention="gqa", n_kv_heads=2),
    "mqa_tied": dict(attention="mqa", n_kv_heads=1, tie_embeddings=True),
    "mla": dict(attention="mla", q_lora_rank=32),
    "mla_moe": dict(
        attention="mla",
        ffn="moe",
        moe_inter_dim=48,
        n_expert_groups=4,
        n_limited_groups=2,
        route_scale=2.5,
    ),
}
ARCHITECTURES = {
    "mha": "LlamaForCausalLM",
    "gqa": "LlamaForCausalLM",
    "mqa_tied": "LlamaForCausalLM",
    "mla": "DeepseekV3ForCausalLM",
    "mla_moe": "DeepseekV3ForCausalLM",
}


def tiny_config(vocab_size: int, **fields) -> ModelConfig:
    base = dict(dim=64, n_layers=3, n_heads=4, inter_dim=192, max_seq_len=128)
    return ModelConfig(vocab_size=vocab_size, **(base | fields))


def varied_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A model whose norm gains and routing biases differ from their initial values."""
    torch.manual_seed(seed)
    model = Transformer(cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.2 * torch.randn_like(param))
        for moe in model.moe_layers():
            moe.gate.bias.add_(0.05 * torch.randn_like(moe.gate.bias))
    return model.eval()


@pytest.fixture(scope="module")
def val_tokens(tiny_data_dir):
    tokens = load_tokens(tiny_data_dir, "val", load_meta(tiny_data_dir))
    return torch.from_numpy(tokens[: 4 * 96].astype("int64")).view(4, 96)  # (B, T) of real text


@pytest.fixture(scope="module")
def vocab_size(tiny_data_dir):
    return load_meta(tiny_data_dir)["vocab_size"]


def greedy(model: Transformer, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding with tinyseek's KV cache; returns (B, T + new_tokens)."""
    cache = model.make_cache(prompt.shape[0], prompt.shape[1] + new_tokens)
    tokens, next_input = prompt, prompt
    for _ in range(new_tokens):
        next_input = model(next_input, cache)[:, -1:].argmax(-1)  # (B, 1)
        tokens = torch.cat([tokens, next_input], dim=1)
    return tokens


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_logits_match(variant, tmp_path, val_tokens, vocab_size):
    model = varied_model(tiny_config(vocab_size, **VARIANTS[variant]))
    export_model(model, tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", local_files_only=True, dtype=torch.float32
    ).eval()
    assert type(hf_model).__name__ == ARCHITECTURES[variant]
    with torch.no_grad():
        ours = model(val_tokens)
        theirs = hf_model(val_tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_greedy_tokens_match(variant, tmp_path, val_tokens, vocab_size):
    model = varied_model(tiny_config(vocab_size, **VARIANTS[variant]))
    export_model(model, tmp_path / "hf")
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    prompt = val_tokens[:2, :16]
    with torch.no_grad():
        ours = greedy(model, prompt, 24)
        theirs = hf_model.generate(
            prompt, max_new_tokens=24, do_sample=False, attention_mask=torch.ones_like(prompt)
        )
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_then_export_identity(variant, tmp_path, vocab_size):
    model = varied_model(tiny_config(vocab_size, **VARIANTS[variant]))
    export_model(model, tmp_path / "first")
    imported = import_model(tmp_path / "first")
    export_model(imported, tmp_path / "second")

    first = load_file(tmp_path / "first" / "model.safetensors")
    second = load_file(tmp_path / "second" / "model.safetensors")
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), name
    for name, tensor in model.state_dict().items():
        assert torch.equal(imported.state_dict()[name], tensor), name


def test_config_round_trip(vocab_size):
    for fields in VARIANTS.values():
        cfg = tiny_config(vocab_size, **fields)
        back = model_config_from_hf(hf_config(cfg), name=cfg.name)
        assert back == cfg


def test_half_split_deepseek_imports(tmp_path, val_tokens, vocab_size):
    """A DeepseekV3 checkpoint with rope_interleave=False is permuted into tinyseek's layout."""
    config = hf_config(tiny_config(vocab_size, attention="mla"))
    config.rope_interleave = False
    torch.manual_seed(1)
    hf_model = DeepseekV3ForCausalLM(config).eval()
    hf_model.save_pretrained(tmp_path / "half")
    model = import_model(tmp_path / "half")
    with torch.no_grad():
        diff = (model(val_tokens) - hf_model(val_tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_rope_permutation_pairs_channels():
    order = interleaved_to_half_split(8)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert order.argsort()[order].tolist() == list(range(8))


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(attention="gqa", n_kv_heads=2, ffn="moe", moe_inter_dim=48), "ffn=moe has no"),
        (dict(attention="mla", ffn="moe", moe_inter_dim=48, score_func="softmax"), "sigmoid"),
        (dict(attention="mla", ffn="moe", moe_inter_dim=48, n_shared_experts=0), "shared"),
        (
            dict(
                attention="mla",
                ffn="moe",
                moe_inter_dim=48,
                n_expert_groups=16,
                n_limited_groups=4,
            ),
            "top-2 experts",
        ),
        (dict(attention="mla", norm_eps=1e-5), "model.norm_eps=1e-05"),
    ],
)
def test_inexpressible_variant_rejected(fields, match):
    with pytest.raises(ValueError, match=match):
        hf_architecture(tiny_config(100, **fields))


def test_yarn_checkpoint_rejected(vocab_size):
    config = hf_config(tiny_config(vocab_size, attention="mla"))
    config.rope_parameters = {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        model_config_from_hf(config)


def test_other_model_type_rejected():
    with pytest.raises(ValueError, match="model_type='mistral' cannot be imported"):
        model_config_from_hf(MistralConfig(vocab_size=100))


def test_mismatched_model_rejected(tmp_path, vocab_size):
    export_model(varied_model(tiny_config(vocab_size, attention="mha")), tmp_path / "hf")
    other = Transformer(tiny_config(vocab_size, attention="mha", dim=128))
    with pytest.raises(ValueError, match=r"model.dim=128 \(checkpoint: 64\)"):
        load_hf_weights(other, tmp_path / "hf")


def test_export_into_foreign_folder_rejected(tmp_path, vocab_size):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a transformers checkpoint"):
        export_model(varied_model(tiny_config(vocab_size)), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.fixture(scope="module")
def mtp_moe_run(tmp_path_factory, tiny_data_dir):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    cfg = tiny_train_config(
        tiny_data_dir, run_dir, "attention=mla", "ffn=moe", "mtp=depth1", "trainer.max_steps=30"
    )
    train(cfg)
    return run_dir


def test_cli_exports_trained_mtp_run(mtp_moe_run, tmp_path, val_tokens):
    out = tmp_path / "hf"
    subprocess.run(
        [sys.executable, "-m", "tinyseek.export", f"run_dir={mtp_moe_run}", f"out={out}"],
        check=True,
        cwd=REPO,
    )
    weights = load_file(out / "model.safetensors")
    assert not [name for name in weights if "mtp" in name or "layers.3" in name]
    assert (out / "tokenizer.json").is_file()

    model = load_model(mtp_moe_run, load_run_config(mtp_moe_run))
    assert model.mtp is not None
    hf_model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    with torch.no_grad():
        diff = (model(val_tokens) - hf_model(val_tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_init_from_trains_further(mtp_moe_run, tmp_path, tiny_data_dir):
    exported = tmp_path / "hf"
    source = load_model(mtp_moe_run, load_run_config(mtp_moe_run))
    export_model(source, exported)
    cfg = tiny_train_config(
        tiny_data_dir,
        tmp_path / "continued",
        "attention=mla",
        "ffn=moe",
        f"init_from={exported}",
        "trainer.max_steps=10",
        "optim.warmup_steps=2",
    )
    train(cfg)
    continued = load_model(tmp_path / "continued", load_run_config(tmp_path / "continued"))
    # Ten small steps move the weights only a little from the imported ones.
    before = source.state_dict()["layers.0.attn.wkv_a.weight"]
    after = continued.state_dict()["layers.0.attn.wkv_a.weight"]
    assert 0 < (after - before).abs().max().item() < 0.1
