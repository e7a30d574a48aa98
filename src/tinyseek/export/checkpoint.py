"""Write tinyseek models as transformers checkpoints and read such checkpoints back."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerFast

from tinyseek.config import ModelConfig, PrecisionConfig
from tinyseek.evaluation.loader import load_model, load_run_config
from tinyseek.export.config_map import hf_architecture, hf_config, model_config_from_hf
from tinyseek.export.weights import from_hf_state, to_hf_state
from tinyseek.model import Transformer

log = logging.getLogger(__name__)


def to_hf_model(model: Transformer) -> PreTrainedModel:
    """Build the transformers model (float32, eval mode) that computes what `model` does."""
    config = hf_config(model.cfg)
    model_class = getattr(transformers, hf_architecture(model.cfg))
    hf_model = model_class(config).float()
    main_state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp.")}
    hf_model.load_state_dict(to_hf_state(model.cfg, main_state), strict=True)
    return hf_model.eval()


def export_model(model: Transformer, out: str | Path, tokenizer_file: str | Path | None = None):
    """Write `model` to the folder `out` as config.json, safetensors and maybe the tokenizer.

    The folder is written under a temporary name and renamed, so a failed export leaves no
    partial checkpoint. An existing export at `out` (a folder with config.json) is replaced.
    """
    out = Path(out)
    if out.exists() and not (out / "config.json").is_file() and any(out.iterdir()):
        raise ValueError(
            f"{out} exists and is not a transformers checkpoint: choose an empty or new folder."
        )
    if model.mtp is not None:
        log.info(
            "leaving out %d MTP module(s): transformers has no place for them", model.mtp.depth
        )
    hf_model = to_hf_model(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_model.save_pretrained(staging, safe_serialization=True)
        if tokenizer_file is not None:
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
            tokenizer.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s checkpoint to %s", hf_architecture(model.cfg), out)
    return out


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Export the trained run in run_dir (its last.ckpt and tokenizer) to the folder out."""
    train_cfg = load_run_config(run_dir)
    hf_architecture(train_cfg.model)  # rejects an inexpressible model before loading weights
    # FP8 recipes only change how the GEMMs run, so the FP32 master weights load into plain
    # Linears and export as they are.
    model = load_model(run_dir, dataclasses.replace(train_cfg, precision=PrecisionConfig()))
    tokenizer_file = Path(train_cfg.data.dir) / "tokenizer.json"
    if not tokenizer_file.is_file():
        log.warning("%s not found, so the export has no tokenizer", tokenizer_file)
        tokenizer_file = None
    return export_model(model, out, tokenizer_file)


def load_hf_config(path: str | Path):
    """Read the transformers config of a local checkpoint folder (no hub download)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path / 'config.json'} not found: pass a local transformers checkpoint folder."
        )
    return AutoConfig.from_pretrained(path, local_files_only=True)


def import_model(path: str | Path, name: str = "imported") -> Transformer:
    """Load a local Llama or DeepseekV3 transformers checkpoint as a tinyseek Transformer."""
    hf_cfg = load_hf_config(path)
    model = Transformer(model_config_from_hf(hf_cfg, name))
    load_hf_weights(model, path)
    return model.eval()


def load_hf_weights(model: Transformer, path: str | Path) -> None:
    """Copy a transformers checkpoint's weights into `model`, whose config must match it.

    MTP modules, which transformers checkpoints lack, keep their initial weights.
    """
    hf_cfg = load_hf_config(path)
    _check_same_shape(model.cfg, model_config_from_hf(hf_cfg), path)
    model_class = getattr(transformers, hf_architecture(model.cfg))
    hf_model = model_class.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    state = from_hf_state(
        model.cfg, hf_model.state_dict(), getattr(hf_cfg, "rope_interleave", False)
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("mtp.")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the model: missing {missing}, unexpected {unexpected}."
        )


_SHAPE_KEYS = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "resolved_head_dim",
    "inter_dim",
    "vocab_size",
    "attention",
    "ffn",
    "norm_eps",
    "rope_theta",
    "tie_embeddings",
)
_MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MOE_KEYS = (
    "n_dense_layers",
    "n_routed_experts",
    "n_shared_experts",
    "n_activated_experts",
    "moe_inter_dim",
    "route_scale",
    "n_expert_groups",
    "n_limited_groups",
)


def _check_same_shape(ours: ModelConfig, theirs: ModelConfig, path) -> None:
    keys = _SHAPE_KEYS
    if ours.attention == "mla":
        keys += _MLA_KEYS
    if ours.ffn == "moe":
        keys += _MOE_KEYS
    differing = [
        f"model.{key}={getattr(ours, key)} (checkpoint: {getattr(theirs, key)})"
        for key in keys
        if getattr(ours, key) != getattr(theirs, key)
    ]
    if differing:
        raise ValueError(
            f"the model config does not match the checkpoint {path}: {', '.join(differing)}. "
            "Set these keys to the checkpoint's values."
        )
