"""The evaluate stage: measure a trained run and write its metrics.json."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from tinyseek.config import EvaluateConfig, TrainConfig
from tinyseek.data.shards import load_meta, load_tokenizer, load_tokens
from tinyseek.data.tokenizer import token_byte_lengths
from tinyseek.evaluation.decode import generate, measure_decoding
from tinyseek.evaluation.loader import load_model, load_run_config
from tinyseek.evaluation.loss import bits_per_byte, split_nll
from tinyseek.evaluation.mtp import mtp_metrics
from tinyseek.io import read_json, write_json
from tinyseek.model.moe import max_violation
from tinyseek.sizing import (
    kv_cache_bytes_per_token,
    kv_cache_elements_per_token_per_layer,
    mha_kv_cache_bytes_per_token,
)
from tinyseek.tracking import start_wandb_run
from tinyseek.training.run import axis_tags, flatten

log = logging.getLogger(__name__)


def precision_context(
    train_cfg: TrainConfig,
) -> tuple[contextlib.AbstractContextManager, torch.dtype]:
    """Autocast matching the training precision, and the KV-cache dtype that goes with it."""
    if train_cfg.precision.lightning.startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16), torch.bfloat16
    return contextlib.nullcontext(), torch.float32


def evaluate(
    cfg: EvaluateConfig, wandb_mode: str = "offline", commit: str | None = None
) -> dict[str, Any]:
    """Evaluate the run in cfg.run_dir and write run_dir/metrics.json."""
    run_dir = Path(cfg.run_dir)
    train_cfg = load_run_config(run_dir)
    train_summary = _load_train_summary(run_dir)
    model = load_model(run_dir, train_cfg)
    meta = load_meta(train_cfg.data.dir)
    val_tokens = load_tokens(train_cfg.data.dir, "val", meta)
    autocast, cache_dtype = precision_context(train_cfg)
    torch.manual_seed(cfg.seed)

    # Loss and bits per byte over the whole validation split
    for moe in model.moe_layers():
        moe.eval_counts.zero_()
    total_nll, n_targets = split_nll(
        model, val_tokens, train_cfg.data.seq_len, cfg.eval.batch_size, autocast
    )
    moe_metrics = expert_load_metrics(model, train_cfg.model.n_dense_layers)
    byte_lengths = token_byte_lengths(load_tokenizer(train_cfg.data.dir))
    # Every token but the first is predicted, so the first token's bytes are left out.
    predicted_bytes = meta["val"]["bytes"] - int(byte_lengths[int(val_tokens[0])])
    val_loss = total_nll / n_targets

    # Cached decoding
    prompt_len = min(cfg.eval.prompt_tokens, train_cfg.model.max_seq_len - cfg.eval.decode_tokens)
    if prompt_len < 1:
        raise ValueError(
            f"eval.decode_tokens={cfg.eval.decode_tokens} leaves no room for a prompt within "
            f"model.max_seq_len={train_cfg.model.max_seq_len}: lower eval.decode_tokens."
        )
    prompt = torch.from_numpy(val_tokens[:prompt_len].astype("int64"))[None]  # (1, T)
    decode = measure_decoding(model, prompt, cfg.eval.decode_tokens, cache_dtype, autocast)
    decode_metrics = {"tokens_per_s": decode.tokens_per_s, "path": "standard"}
    if train_cfg.model.attention == "mla":
        naive = measure_decoding(
            model, prompt, cfg.eval.decode_tokens, cache_dtype, autocast, absorbed=False
        )
        decode_metrics = {
            "path": "absorbed",
            "tokens_per_s": decode.tokens_per_s,
            "absorbed_tokens_per_s": decode.tokens_per_s,
            "naive_tokens_per_s": naive.tokens_per_s,
            "naive_kv_bytes_per_token": kv_cache_bytes_per_token(
                train_cfg.model, cache_dtype, absorbed=False
            ),
            "naive_kv_bytes_per_token_measured": naive.kv_bytes_per_token_measured,
        }
    sample = _sample_text(model, prompt, cfg, train_cfg, autocast)

    metrics = {
        "variant": train_cfg.name,
        "run_dir": str(run_dir),
        "axes": {
            "model": train_cfg.model.name,
            "attention": train_cfg.model.attention,
            "ffn": train_cfg.model.ffn_label,
            "precision": train_cfg.precision.name,
            "mtp": train_cfg.mtp.depth,
            "seed": train_cfg.seed,
        },
        "val": {
            "loss": val_loss,
            "bpb": bits_per_byte(total_nll, predicted_bytes),
            "tokens": n_targets,
            "bytes": predicted_bytes,
        },
        "train": train_summary["train"],
        "throughput": {**train_summary["throughput"], "decode_tokens_per_s": decode.tokens_per_s},
        "params": train_summary["params"],
        "kv_cache": {
            "dtype": str(cache_dtype).removeprefix("torch."),
            "elements_per_token_per_layer": kv_cache_elements_per_token_per_layer(train_cfg.model),
            "bytes_per_token": kv_cache_bytes_per_token(train_cfg.model, cache_dtype),
            "bytes_per_token_measured": decode.kv_bytes_per_token_measured,
            "mha_bytes_per_token": mha_kv_cache_bytes_per_token(train_cfg.model, cache_dtype),
        },
        "decode": decode_metrics,
        "memory": train_summary["memory"],
        "cost": train_summary["cost"],
        "sample": sample,
    }
    if moe_metrics:
        metrics["moe"] = moe_metrics
    if "fp8" in train_summary:
        metrics["fp8"] = train_summary["fp8"]
    if model.mtp is not None:
        # val.loss already leaves MTP out; main_loss repeats it beside the MTP numbers.
        metrics["mtp"] = {"main_loss": val_loss} | mtp_metrics(
            model, val_tokens, train_cfg.data.seq_len, cfg.eval.batch_size, autocast
        )
    write_json(run_dir / "metrics.json", metrics)
    log.info("%s: val loss %.4f, val bpb %.4f", train_cfg.name, val_loss, metrics["val"]["bpb"])
    _log_to_wandb(cfg, train_cfg, metrics, wandb_mode, commit)
    return metrics


def expert_load_metrics(model, first_moe_layer: int) -> dict[str, Any] | None:
    """Expert loads over the evaluated split: MaxVio per layer, dead experts, biases."""
    moe_layers = model.moe_layers()
    if not moe_layers:
        return None
    counts = torch.stack([moe.eval_counts for moe in moe_layers])  # (layers, E)
    per_layer = [max_violation(layer_counts) for layer_counts in counts]
    return {
        "val_maxvio": sum(per_layer) / len(per_layer),
        "val_maxvio_max": max(per_layer),
        "val_maxvio_per_layer": per_layer,
        "layers": list(range(first_moe_layer, first_moe_layer + len(moe_layers))),
        "val_tokens_per_expert": counts.long().tolist(),
        "dead_experts": int((counts == 0).sum()),
        "bias_absmax": float(torch.stack([moe.gate.bias for moe in moe_layers]).abs().max()),
    }


def _load_train_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "train.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the training run in {run_dir} did not finish.")
    return read_json(path)


def _sample_text(model, prompt, cfg: EvaluateConfig, train_cfg: TrainConfig, autocast) -> str:
    generator = torch.Generator().manual_seed(cfg.seed)
    tokens = generate(
        model,
        prompt,
        cfg.eval.sample_tokens,
        cfg.eval.temperature,
        cfg.eval.top_k,
        generator,
        autocast,
    )
    return load_tokenizer(train_cfg.data.dir).decode(tokens[0].tolist())


def _log_to_wandb(
    cfg: EvaluateConfig,
    train_cfg: TrainConfig,
    metrics: dict[str, Any],
    mode: str,
    commit: str | None,
) -> None:
    if cfg.logger is None or cfg.logger.type != "wandb":
        return
    config = OmegaConf.to_container(OmegaConf.structured(train_cfg), resolve=True) | {
        "git_commit": commit
    }
    run = start_wandb_run(
        cfg.logger,
        mode,
        name=train_cfg.name,
        group=train_cfg.ablation,
        job_type="evaluate",
        tags=axis_tags(train_cfg),
        config=config,
    )
    summary = flatten(
        {k: v for k, v in metrics.items() if k not in ("sample", "axes", "run_dir", "variant")}
    )
    run.summary.update(summary)
    run.summary["sample"] = metrics["sample"]
