"""Build and fit one training run from a validated TrainConfig."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import string
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import wandb
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import OmegaConf

from tinyseek.config import TokenizerConfig, TrainConfig
from tinyseek.data.datamodule import TokenDataModule
from tinyseek.data.shards import load_meta, load_tokenizer
from tinyseek.data.tokenizer import tokenizer_hash
from tinyseek.io import read_json, write_json, write_text
from tinyseek.precision import FP8Telemetry, convert_to_fp8
from tinyseek.sizing import count_active_parameters, count_parameters, train_flops_per_token
from tinyseek.tracking import declare_summary_metrics
from tinyseek.training.callbacks import (
    HistoryWriter,
    MemoryMonitor,
    ThroughputMonitor,
    peak_memory_bytes,
)
from tinyseek.training.checkpoint import (
    AtomicCheckpointIO,
    FinalCheckpoint,
    RngState,
    RunIdentity,
    check_checkpoint,
    remove_stale_temporaries,
)
from tinyseek.training.flops import measure_peak_flops
from tinyseek.training.guard import NumericalGuard
from tinyseek.training.launch import locked_run_dir, spawn_ranks
from tinyseek.training.module import LanguageModel
from tinyseek.training.wandb_logger import CheckpointAlignedWandbLogger

log = logging.getLogger(__name__)

# Keys whose change makes an existing checkpoint belong to a different experiment.
_IDENTITY_KEYS = (
    "seed",
    "model",
    "mtp",
    "precision",
    "data",
    "tokenizer",
    "optim",
    "trainer.max_steps",
    "init_from",
)


class _DropNoise(logging.Filter):
    """Drop Lightning's advertisement and its note about torch.load defaults."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "`weights_only` was not set" not in message


def quiet_known_warnings() -> None:
    """Silence Lightning advice that does not apply to in-memory token windows on CPU."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logging.getLogger(name).addFilter(_DropNoise())
    for pattern in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*LOCAL_RANK.*",
        ".*Checkpoint directory.*exists and is not empty.*",
        ".*LeafSpec.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def check_tokenizer(cfg: TokenizerConfig, meta: dict[str, Any], data_dir: str) -> None:
    """Reject token files that another tokenizer produced or that tokenizer.json contradicts."""
    prepared = meta["tokenizer"]
    on_disk = tokenizer_hash(load_tokenizer(data_dir))
    if on_disk != prepared["sha256"]:
        raise ValueError(
            f"{Path(data_dir) / 'tokenizer.json'} has sha256 {on_disk[:12]}…, but the token "
            f"files in {data_dir} were made with tokenizer {prepared['sha256'][:12]}… (meta.json): "
            "they come from a different tokenizer. Run pipelines/prepare.py again for this folder."
        )
    capacity = int(np.iinfo(np.dtype(meta["dtype"])).max) + 1
    if meta["vocab_size"] > capacity:
        raise ValueError(
            f"{data_dir}: the vocabulary of {meta['vocab_size']} tokens does not fit the token "
            f"files' dtype {meta['dtype']} (at most {capacity} ids), so ids were truncated. "
            "Run pipelines/prepare.py again, which picks a wide enough dtype."
        )
    same_type = prepared["type"] == cfg.type
    same_size = cfg.type != "bpe" or prepared["vocab_size_requested"] == cfg.vocab_size
    if not (same_type and same_size):
        raise ValueError(
            f"{data_dir} was prepared with tokenizer "
            f"{_describe(prepared['type'], prepared['vocab_size_requested'])}, "
            f"but the config asks for {_describe(cfg.type, cfg.vocab_size)}: run "
            "pipelines/prepare.py with this tokenizer, or point data.dir at matching data."
        )


def _describe(kind: str, vocab_size: int | None) -> str:
    return f"bpe (vocab_size {vocab_size})" if kind == "bpe" else kind


def resolve_vocab_size(requested: int | None, meta: dict[str, Any]) -> int:
    if requested is None:
        return meta["vocab_size"]
    if requested < meta["vocab_size"]:
        raise ValueError(
            f"model.vocab_size={requested} is smaller than the tokenizer's vocabulary of "
            f"{meta['vocab_size']}: unset it (null) to take the tokenizer's size."
        )
    return requested


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    tree = dataclasses.asdict(cfg)
    identity = {}
    for key in _IDENTITY_KEYS:
        value = tree
        for part in key.split("."):
            value = value[part]
        identity[key] = value
    return identity


def code_version() -> str:
    """sha256 over the tinyseek package's Python sources, in path order."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# Keys that only steer how a job runs, left out of the full-config comparison.
_RUN_CONTROL_KEYS = ("resume", "restart_on_change", "logger", "run_dir", "name", "ablation")


def run_identity(cfg: TrainConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """Values a checkpoint must match to be resumed: experiment keys, full config, data, code."""
    full = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_CONTROL_KEYS}
    full["trainer"] = {k: v for k, v in full["trainer"].items() if k != "enable_progress_bar"}
    full["prepared_data"] = {
        "tokenizer_sha256": meta["tokenizer"]["sha256"],
        "train_tokens": meta["train"]["tokens"],
        "val_tokens": meta["val"]["tokens"],
    }
    return {"config": _identity(cfg), "full": full, "code": code_version()}


def find_resume_checkpoint(
    cfg: TrainConfig, run_dir: Path, meta: dict[str, Any]
) -> tuple[Path | None, int]:
    """Return last.ckpt and its step to resume from, or (None, 0) for a fresh run.

    A checkpoint from a different configuration is an error, never silently reused or
    overwritten, unless restart_on_change is set. Then the run starts over, and it also
    starts over when any setting, the prepared data or the tinyseek code changed, or when
    the checkpoint already reached max_steps (DVC reruns a finished stage only because a
    dependency changed). A damaged checkpoint is always an error.
    """
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not (cfg.resume and checkpoint.exists()):
        return None, 0
    step, saved = check_checkpoint(checkpoint)
    if saved is None:
        saved = _identity_from_config_file(run_dir)
    current = run_identity(cfg, meta)
    if saved is not None and saved["config"] != current["config"]:
        if cfg.restart_on_change:
            log.warning(
                "%s contains a run of another configuration; training from scratch", run_dir
            )
            return None, 0
        raise ValueError(
            f"{run_dir} contains a checkpoint of a different configuration: choose another "
            "run_dir, delete that folder, or set resume=false to start over in it."
        )
    # Under DVC any change of a dependency reruns the stage, so only an interrupted one resumes.
    if cfg.restart_on_change and (
        step >= cfg.trainer.max_steps or saved is None or saved.get("full") != current["full"]
    ):
        log.warning("%s contains a finished run or other settings; training anew", run_dir)
        return None, 0
    if saved is not None and saved.get("code") not in (None, current["code"]):
        if cfg.restart_on_change:
            log.warning("%s was trained by other tinyseek code; training from scratch", run_dir)
            return None, 0
        log.warning("%s was trained by other tinyseek code; resuming it anyway", run_dir)
    return checkpoint, step


def _identity_from_config_file(run_dir: Path) -> dict[str, Any] | None:
    # Checkpoints written before the identity was stored in them: compare config.yaml.
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return None
    saved = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(saved_path))
    )
    return {"config": _identity(saved), "code": None}


def choose_wandb_run_id(run_dir: Path, resuming: bool) -> str:
    """Reuse the run's W&B id when resuming; otherwise record a new one in run_dir."""
    # A resumed fit continues its W&B run; a fresh fit, even in an old folder, starts a new one.
    run_id_path = run_dir / "wandb_id.txt"
    if resuming and run_id_path.is_file():
        return run_id_path.read_text().strip()
    run_id = new_run_id()
    write_text(run_id_path, run_id + "\n")
    return run_id


def build_logger(
    cfg: TrainConfig,
    run_dir: Path,
    wandb_mode: str,
    wandb_dir: str,
    extra: dict[str, Any],
    run_id: str | None,
    resumed_step: int = 0,
) -> Logger | bool:
    if cfg.logger.type == "none":
        return False
    if cfg.logger.type == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")

    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True) | extra
    logger = CheckpointAlignedWandbLogger(
        name=cfg.name,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.ablation,
        job_type="train",
        tags=sorted(set(cfg.logger.tags) | set(axis_tags(cfg))),
        save_dir=wandb_dir,
        mode=wandb_mode,
        id=run_id,
        resume="allow",
        config=config,
        # The offline .wandb file is flushed on this interval (wandb 0.31 default 15 s), so a
        # SIGKILL loses at most this much of what W&B already accepted.
        settings=wandb.Settings(x_transaction_log_flush_interval=1.0),
    )
    logger.set_saved_step(resumed_step)
    return logger


def new_run_id() -> str:
    """Generate a random 8-character W&B run id of lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def axis_tags(cfg: TrainConfig) -> list[str]:
    """Build one tag per axis value, for filtering runs on the W&B dashboard."""
    return [
        f"model:{cfg.model.name}",
        f"attention:{cfg.model.attention}",
        f"ffn:{cfg.model.ffn}",
        f"precision:{cfg.precision.name}",
        f"mtp:{cfg.mtp.depth}",
        f"seed:{cfg.seed}",
    ]


def build_trainer(
    cfg: TrainConfig, run_dir: Path, logger: Logger | bool, callbacks: list[L.Callback]
) -> L.Trainer:
    t = cfg.trainer
    checkpointing = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=t.checkpoint_every_n_steps,
    )
    progress_bar = [TQDMProgressBar(refresh_rate=10)] if t.enable_progress_bar else []
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=cfg.precision.lightning,
        max_steps=t.max_steps,
        max_epochs=-1,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        logger=logger,
        callbacks=[checkpointing, *progress_bar, *callbacks],
        plugins=[AtomicCheckpointIO()],
        # Each rank draws its own slice of the global batch (TokenDataModule).
        use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )


@dataclasses.dataclass
class FitJob:
    """The inputs of one rank's fit: the validated config, the data meta and the resume point."""

    cfg: TrainConfig
    meta: dict[str, Any]
    checkpoint: Path | None
    resumed_step: int
    wandb_mode: str
    wandb_dir: str
    commit: str | None
    wandb_run_id: str | None


def train(
    cfg: TrainConfig,
    wandb_mode: str = "offline",
    wandb_dir: str = ".",
    commit: str | None = None,
    extra_callbacks: tuple[L.Callback, ...] = (),
) -> dict[str, Any]:
    """Train one variant into cfg.run_dir and return the training summary (train.json).

    extra_callbacks run in-process only; a spawned DDP run ignores them.
    """
    quiet_known_warnings()
    run_dir = Path(cfg.run_dir)

    # Checks that need the prepared data, before anything is written
    meta = load_meta(cfg.data.dir)
    check_tokenizer(cfg.tokenizer, meta, cfg.data.dir)
    cfg.model.vocab_size = resolve_vocab_size(cfg.model.vocab_size, meta)
    checkpoint, resumed_step = find_resume_checkpoint(cfg, run_dir, meta)
    if checkpoint:
        log.info("resuming from %s at step %d", checkpoint, resumed_step)
    finished = _finished_summary(run_dir, cfg.trainer.max_steps) if checkpoint else None
    if finished is not None:
        log.info(
            "%s already trained %d steps, so nothing was run; set resume=false to train again",
            run_dir,
            cfg.trainer.max_steps,
        )
        return finished
    TokenDataModule(cfg.data, cfg.seed, cfg.trainer.max_steps, cfg.trainer.limit_val_batches)

    with locked_run_dir(run_dir):
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        if checkpoint:
            remove_stale_temporaries(checkpoint.parent)
        run_id = None
        if cfg.logger.type == "wandb":
            run_id = choose_wandb_run_id(run_dir, resuming=checkpoint is not None)
        job = FitJob(cfg, meta, checkpoint, resumed_step, wandb_mode, wandb_dir, commit, run_id)
        if cfg.trainer.devices > 1 and cfg.trainer.num_nodes == 1:
            # NOTE: multi-node jobs are started by their cluster (SLURM, torchrun), not here.
            spawn_ranks(fit_rank, cfg.trainer.devices, (job,))
            return read_json(run_dir / "train.json")
        return fit(job, extra_callbacks)


def fit_rank(rank: int, job: FitJob) -> None:
    """Entry point of one spawned DDP rank; rank 0 owns the W&B run and finishes it."""
    from tinyseek.tracking import finish_wandb_run

    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)
    quiet_known_warnings()
    try:
        fit(job)
    finally:
        finish_wandb_run()


def fit(job: FitJob, extra_callbacks: tuple[L.Callback, ...] = ()) -> dict[str, Any]:
    """Build the model, data, callbacks and trainer, fit, and write train.json on rank zero."""
    cfg = job.cfg
    run_dir = Path(cfg.run_dir)
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    datamodule = TokenDataModule(
        cfg.data,
        cfg.seed,
        cfg.trainer.max_steps,
        cfg.trainer.limit_val_batches,
        # Page-locked batches let the host-to-GPU copy overlap the step.
        pin_memory=cfg.trainer.accelerator in ("gpu", "cuda"),
    )

    # Model and callbacks
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = LanguageModel(
        cfg.model,
        cfg.optim,
        cfg.trainer.max_steps,
        cfg.trainer.gradient_clip_val,
        cfg.mtp,
        compile=cfg.compile,
    )
    if cfg.init_from and job.checkpoint is None:
        from tinyseek.export import load_hf_weights

        load_hf_weights(module.model, cfg.init_from)
        log.info("initialised the model from %s", cfg.init_from)
    fp8 = None
    if cfg.precision.fp8_recipe is not None:
        plan = convert_to_fp8(module.model, cfg.precision.fp8_recipe, cfg.precision.tile)
        fp8 = FP8Telemetry(plan, cfg.precision.tile, cfg.precision.telemetry_every_n_steps)
    tokens_per_step = (
        cfg.data.batch_size * cfg.data.seq_len * cfg.trainer.devices * cfg.trainer.num_nodes
    )
    throughput = ThroughputMonitor(tokens_per_step, cfg.trainer.log_every_n_steps)
    history = HistoryWriter(run_dir / "history.csv", cfg.trainer.log_every_n_steps)
    guard = NumericalGuard(cfg.guard, checkpoint_path)
    callbacks = [
        throughput,
        MemoryMonitor(cfg.trainer.log_every_n_steps),
        history,
        guard,
        RngState(),
        RunIdentity(run_identity(cfg, job.meta)),
        FinalCheckpoint(checkpoint_path),
        *extra_callbacks,
    ]
    if fp8 is not None:
        callbacks.append(fp8)
    logger = build_logger(
        cfg,
        run_dir,
        job.wandb_mode,
        job.wandb_dir,
        {"git_commit": job.commit},
        job.wandb_run_id,
        job.resumed_step,
    )
    trainer = build_trainer(cfg, run_dir, logger, callbacks)
    if isinstance(logger, WandbLogger) and trainer.is_global_zero:
        declare_summary_metrics(logger.experiment)

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=job.checkpoint)
    wall_s = time.perf_counter() - started
    if trainer.is_global_zero:
        # A checkpoint already at max_steps skips on_train_end, so write the restored rows here.
        history.write()

    summary = summarise(cfg, trainer, module, throughput, wall_s, job.meta)
    summary["guard"] = {"skipped_steps": guard.skipped_steps}
    if fp8 is not None:
        summary["fp8"] = fp8.summary()
    if trainer.is_global_zero:
        write_json(run_dir / "train.json", summary)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(flatten(summary))
        log.info("run written to %s", run_dir)
    return summary


def _finished_summary(run_dir: Path, max_steps: int) -> dict[str, Any] | None:
    """Load the train.json of a run that already reached max_steps, else return None."""
    path = run_dir / "train.json"
    if not path.is_file():
        return None
    summary = read_json(path)
    return summary if summary["train"]["steps"] >= max_steps else None


def summarise(
    cfg: TrainConfig,
    trainer: L.Trainer,
    module: LanguageModel,
    throughput: ThroughputMonitor,
    wall_s: float,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Collect the training numbers that the evaluate stage merges into metrics.json."""
    model = module.model
    flops_per_token = train_flops_per_token(model, cfg.model, cfg.data.seq_len)
    dtype = torch.bfloat16 if cfg.precision.lightning.startswith("bf16") else torch.float32
    peak_flops = measure_peak_flops(dtype, module.device)
    tokens_per_s = throughput.mean_tokens_per_s
    devices = cfg.trainer.devices * cfg.trainer.num_nodes
    metrics = trainer.callback_metrics
    return {
        "variant": cfg.name,
        "train": {
            "steps": trainer.global_step,
            "tokens": trainer.global_step * cfg.data.batch_size * cfg.data.seq_len * devices,
            "wall_s": wall_s,
            "loss": float(metrics["train/loss"]) if "train/loss" in metrics else None,
        },
        "val_sampled": {"loss": float(metrics["val/loss"]) if "val/loss" in metrics else None},
        "throughput": {
            "tokens_per_s": tokens_per_s,
            "flops_per_token": flops_per_token,
            "peak_flops_measured": peak_flops,
            "mfu": tokens_per_s * flops_per_token / (peak_flops * devices) if peak_flops else None,
        },
        "params": {"total": count_parameters(model), "active": count_active_parameters(model)},
        "memory": {"peak_bytes": peak_memory_bytes(module.device)},
        "cost": {
            "devices": devices,
            "device": str(module.device.type),
            # Device-hours of this job's fit, resumed segments only.
            "device_hours": wall_s * devices / 3600.0,
        },
        "data": {"vocab_size": meta["vocab_size"], "tokenizer": meta["tokenizer"]["type"]},
    }


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested metrics into W&B keys joined by '/'."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat
