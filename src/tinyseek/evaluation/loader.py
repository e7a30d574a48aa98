"""Load a trained run's config and weights from its run folder."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from tinyseek.config import TrainConfig
from tinyseek.model import Transformer
from tinyseek.precision import convert_to_fp8


def load_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a trained run folder. Train into it first with "
            "`python pipelines/train.py run_dir=...`."
        )
    schema = OmegaConf.structured(TrainConfig)
    return OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(path)))


def load_model(run_dir: str | Path, cfg: TrainConfig) -> Transformer:
    """Build the model and load the weights of checkpoints/last.ckpt."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the run in {run_dir} has not finished training."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError or pickle errors
        raise ValueError(
            f"checkpoint {path} is unreadable ({err}): it is corrupt or truncated."
        ) from err

    model = Transformer(cfg.model, cfg.mtp.depth)
    if cfg.precision.fp8_recipe is not None:
        # Evaluate the model as it was trained: the same FP8 GEMMs, same parameter names.
        convert_to_fp8(model, cfg.precision.fp8_recipe, cfg.precision.tile)
    prefix = "model."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    model.load_state_dict(state)
    return model.eval()
