"""Typed configuration for every Hydra group, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` are merged onto these schemas, so a misspelt key fails at
composition. Cross-field rules live in ``__post_init__`` and run when :func:`to_object` turns
a composed config into objects. Each rule raises a ``ValueError`` that names the key, the
value and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

ATTENTION_TYPES = ("mha", "gqa", "mqa", "mla")
FFN_TYPES = ("dense", "moe")
SCORE_FUNCS = ("softmax", "sigmoid")
BALANCE_OPTIONS = ("aux_free", "seq_aux", "aux_loss", "none")
PRECISIONS = ("fp32", "bf16", "fp8_tensorwise", "fp8_rowwise", "fp8_blockwise")
LIGHTNING_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
TOKENIZER_TYPES = ("bpe", "char", "byte")
DATA_SOURCES = ("default", "path", "hub")
LOGGER_TYPES = ("wandb", "csv", "none")
MTP_SCHEDULES = ("constant", "step")


def _check_choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is invalid: choose one of {', '.join(choices)}.")


def _check_positive(key: str, value: float | int) -> None:
    if value <= 0:
        raise ValueError(f"{key}={value} is invalid: it must be positive.")


@dataclass
class ModelConfig:
    """Decoder size and architecture."""

    name: str = "small"
    """Preset name, used in run names and reports."""
    dim: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None
    """Key/value heads: n_heads for MHA, 1 for MQA, a divisor of n_heads for GQA."""
    head_dim: int | None = None
    """Per-head width; None means dim // n_heads."""
    inter_dim: int = 768
    """Hidden width of the dense SwiGLU feed-forward."""
    vocab_size: int | None = None
    """None takes the vocabulary size from the prepared data's meta.json."""
    max_seq_len: int = 256
    """Maximum sequence length, which sizes the rotary tables and the KV cache."""
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    init_std: float = 0.02
    attention: str = "mha"
    """Attention type: mha, gqa, mqa or mla (set by the attention group)."""
    q_lora_rank: int = 0
    """MLA query latent width; 0 projects the query at full rank (DeepSeek-V2-Lite)."""
    kv_lora_rank: int = 64
    """MLA compressed key/value latent width, the cached part besides the RoPE key."""
    qk_nope_head_dim: int = 16
    """MLA per-head query/key width without rotary embedding."""
    qk_rope_head_dim: int = 8
    """MLA rotary query/key width; one RoPE key of this width is shared by all heads."""
    v_head_dim: int = 16
    """MLA per-head value width."""
    n_dense_layers: int = 1
    """MoE: the first this many blocks keep the dense SwiGLU."""
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    """MoE: always-on experts, run as one SwiGLU of width n_shared_experts * moe_inter_dim."""
    n_activated_experts: int = 3
    """MoE: routed experts per token (top-k)."""
    moe_inter_dim: int = 88
    """MoE: hidden width of one expert."""
    score_func: str = "sigmoid"
    """MoE router scores: softmax (DeepSeek-V2) or sigmoid (DeepSeek-V3)."""
    route_scale: float = 1.0
    """MoE: factor applied to the gate values of the routed experts."""
    n_expert_groups: int = 1
    """MoE: groups of routed experts for group-limited routing (1 disables it)."""
    n_limited_groups: int = 1
    """MoE: groups a token may route to."""
    balance: list[str] = field(default_factory=lambda: ["aux_free", "seq_aux"])
    """MoE load balancing: any of aux_free, seq_aux, aux_loss, or [none]."""
    bias_update_speed: float = 0.001
    """MoE aux_free: bias step gamma per optimiser step."""
    seq_aux_alpha: float = 1e-4
    """MoE seq_aux: weight of the complementary sequence-wise balance loss."""
    aux_loss_alpha: float = 0.003
    """MoE aux_loss: weight of DeepSeek-V2's expert-level balance loss."""
    ffn: str = "dense"
    """Feed-forward type (set by the ffn group)."""
    ffn_label: str = "${.ffn}"
    """Feed-forward axis value in variant names: the ffn group option, such as moe_aux_loss."""

    def __post_init__(self) -> None:
        _check_choice("model.attention", self.attention, ATTENTION_TYPES)
        _check_choice("model.ffn", self.ffn, FFN_TYPES)
        for key in ("dim", "n_layers", "n_heads", "inter_dim", "max_seq_len"):
            _check_positive(f"model.{key}", getattr(self, key))
        if self.head_dim is None and self.dim % self.n_heads != 0:
            raise ValueError(
                f"model.dim={self.dim} is not divisible by model.n_heads={self.n_heads}: "
                "pick n_heads that divides dim, or set model.head_dim explicitly."
            )
        if self.head_dim is not None:
            _check_positive("model.head_dim", self.head_dim)
        if self.attention != "mla" and self.resolved_head_dim % 2 != 0:
            raise ValueError(
                f"head_dim={self.resolved_head_dim} (model.dim={self.dim} / model.n_heads="
                f"{self.n_heads}) is odd: rotary embeddings rotate channel pairs, so choose "
                "dim and n_heads that give an even head_dim, or set model.head_dim."
            )
        if self.vocab_size is not None:
            _check_positive("model.vocab_size", self.vocab_size)
        if self.attention == "mla":
            self._check_mla()
        if self.ffn == "moe":
            self._check_moe()
        self._check_kv_heads()

    def _check_mla(self) -> None:
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            _check_positive(f"model.{key}", getattr(self, key))
        if self.q_lora_rank < 0:
            raise ValueError(
                f"model.q_lora_rank={self.q_lora_rank} is invalid: use 0 for a full-rank query "
                "or a positive latent width."
            )
        if self.qk_rope_head_dim % 2 != 0:
            raise ValueError(
                f"model.qk_rope_head_dim={self.qk_rope_head_dim} is odd: rotary embeddings "
                "rotate channel pairs, so use an even width."
            )

    def _check_moe(self) -> None:
        for key in ("n_routed_experts", "n_activated_experts", "moe_inter_dim", "route_scale"):
            _check_positive(f"model.{key}", getattr(self, key))
        _check_positive("model.n_expert_groups", self.n_expert_groups)
        _check_positive("model.n_limited_groups", self.n_limited_groups)
        _check_choice("model.score_func", self.score_func, SCORE_FUNCS)
        # Grouped GEMMs need 16-byte-aligned strides: 8 elements cover BF16/FP16 and FP32.
        for key in ("dim", "moe_inter_dim"):
            if getattr(self, key) % 8 != 0:
                raise ValueError(
                    f"model.{key}={getattr(self, key)} is not a multiple of 8, which the MoE "
                    "grouped GEMMs need for aligned strides: round it to a multiple of 8."
                )
        if self.n_activated_experts > self.n_routed_experts:
            raise ValueError(
                f"model.n_activated_experts={self.n_activated_experts} exceeds "
                f"model.n_routed_experts={self.n_routed_experts}: lower the top-k or add experts."
            )
        if self.n_routed_experts % self.n_expert_groups != 0:
            raise ValueError(
                f"model.n_expert_groups={self.n_expert_groups} does not divide "
                f"model.n_routed_experts={self.n_routed_experts}: choose a divisor."
            )
        if self.n_limited_groups > self.n_expert_groups:
            raise ValueError(
                f"model.n_limited_groups={self.n_limited_groups} exceeds "
                f"model.n_expert_groups={self.n_expert_groups}: a token cannot use more groups "
                "than exist."
            )
        reachable = self.n_limited_groups * self.n_routed_experts // self.n_expert_groups
        if reachable < self.n_activated_experts:
            raise ValueError(
                f"model.n_limited_groups={self.n_limited_groups} leaves {reachable} reachable "
                f"experts, fewer than model.n_activated_experts={self.n_activated_experts}: "
                "allow more groups."
            )
        if not 0 <= self.n_dense_layers <= self.n_layers:
            raise ValueError(
                f"model.n_dense_layers={self.n_dense_layers} must lie in [0, model.n_layers="
                f"{self.n_layers}]."
            )
        if self.n_shared_experts < 0:
            raise ValueError(f"model.n_shared_experts={self.n_shared_experts} is negative.")
        for option in self.balance:
            _check_choice("model.balance", option, BALANCE_OPTIONS)
        if "none" in self.balance and len(self.balance) > 1:
            raise ValueError(f"model.balance={list(self.balance)} mixes none with other options.")
        if self.bias_update_speed < 0:
            raise ValueError(f"model.bias_update_speed={self.bias_update_speed} is negative.")

    def _check_kv_heads(self) -> None:
        if self.n_kv_heads is None or self.attention == "mla":
            # MLA up-projects keys and values for every head from one shared latent.
            self.n_kv_heads = 1 if self.attention == "mqa" else self.n_heads
        _check_positive("model.n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"model.n_heads={self.n_heads} is not divisible by "
                f"model.n_kv_heads={self.n_kv_heads}: choose n_kv_heads that divides n_heads."
            )
        if self.attention == "mha" and self.n_kv_heads != self.n_heads:
            raise ValueError(
                f"model.n_kv_heads={self.n_kv_heads} contradicts attention=mha, which needs "
                f"n_kv_heads == n_heads ({self.n_heads}): use attention=gqa instead."
            )
        if self.attention == "mqa" and self.n_kv_heads != 1:
            raise ValueError(
                f"model.n_kv_heads={self.n_kv_heads} contradicts attention=mqa, which needs "
                "n_kv_heads=1: use attention=gqa instead."
            )

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads


@dataclass
class MTPConfig:
    """Multi-token prediction: extra modules that predict tokens further ahead (DeepSeek-V3)."""

    depth: int = 0
    """Number of sequential MTP modules; 0 turns multi-token prediction off."""
    label: str = ""
    """Run-name suffix: empty without MTP, '-mtp<depth>' with it (set by conf/mtp/)."""
    loss_weight: float = 0.3
    """Weight lambda of the MTP loss, averaged over depths and added to the main loss."""
    schedule: str = "constant"
    """constant keeps loss_weight; step switches to final_loss_weight at switch_fraction."""
    final_loss_weight: float = 0.1
    """Weight after the switch of the step schedule (DeepSeek-V3 goes from 0.3 to 0.1)."""
    switch_fraction: float = 0.68
    """Fraction of trainer.max_steps after which the step schedule uses final_loss_weight."""

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ValueError(f"mtp.depth={self.depth} is negative: use 0 (off) or more.")
        _check_choice("mtp.schedule", self.schedule, MTP_SCHEDULES)
        for key in ("loss_weight", "final_loss_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"mtp.{key}={getattr(self, key)} is negative: use 0 or more.")
        if not 0.0 <= self.switch_fraction <= 1.0:
            raise ValueError(f"mtp.switch_fraction={self.switch_fraction} must lie in [0, 1].")

    def weight_at(self, step: int, max_steps: int) -> float:
        """Return the MTP loss weight for an optimiser step."""
        if self.schedule == "step" and step >= self.switch_fraction * max_steps:
            return self.final_loss_weight
        return self.loss_weight


@dataclass
class PrecisionConfig:
    """Numeric precision of training: a name, Lightning's precision plugin and the FP8 recipe."""

    name: str = "fp32"
    lightning: str = "32-true"
    """Lightning precision for everything that is not an FP8 GEMM."""
    tile: int = 128
    """FP8 blockwise tile: 1 x tile for activations and gradients, tile x tile for weights."""
    telemetry_every_n_steps: int = 25
    """FP8 telemetry sampling interval in steps; 0 turns it off."""

    def __post_init__(self) -> None:
        _check_choice("precision.name", self.name, PRECISIONS)
        _check_choice("precision.lightning", self.lightning, LIGHTNING_PRECISIONS)
        if self.tile <= 0 or self.tile % 16 != 0:
            raise ValueError(
                f"precision.tile={self.tile} is invalid: FP8 GEMMs need a positive multiple "
                "of 16, such as 128 (DeepSeek-V3), 64 or 32."
            )
        if self.telemetry_every_n_steps < 0:
            raise ValueError(
                f"precision.telemetry_every_n_steps={self.telemetry_every_n_steps} is "
                "invalid: use a positive interval, or 0 to turn telemetry off."
            )

    @property
    def fp8_recipe(self) -> str | None:
        """tensorwise, rowwise or blockwise for the FP8 precisions, else None."""
        return self.name.removeprefix("fp8_") if self.name.startswith("fp8_") else None


@dataclass
class DataConfig:
    """Corpus source, split and batch geometry."""

    name: str = "tinyshakespeare"
    """Corpus name: the folder under $TINYSEEK_DATA_DIR, the cache and data/."""
    source: str = "default"
    """default (data dir, then cache, then url), path (a file or folder), or hub (datasets)."""
    path: str | None = None
    """A text file or a folder of *.txt files; used first whenever it is set."""
    filename: str = "input.txt"
    """File name looked up under $TINYSEEK_DATA_DIR/<name>/ and the cache."""
    url: str | None = None
    sha256: str | None = None
    """Expected checksum of the downloaded (or found) file; None skips the check."""
    hf_path: str | None = None
    """Hugging Face dataset name or builder for datasets.load_dataset (hub source)."""
    hf_config: str | None = None
    hf_data_files: Any = None
    hf_split: str = "train"
    text_column: str = "text"
    val_fraction: float = 0.1
    """The last val_fraction of the text (by characters) is the validation split."""
    dir: str = "data/${data.name}"
    """Folder of the prepared splits, tokenizer and token files."""
    batch_size: int = 16
    seq_len: int = 128
    """Training window length in tokens."""
    num_workers: int = 0
    """DataLoader worker processes that cut batches ahead of the step; 0 cuts them in line."""

    def __post_init__(self) -> None:
        _check_choice("data.source", self.source, DATA_SOURCES)
        _check_positive("data.batch_size", self.batch_size)
        _check_positive("data.seq_len", self.seq_len)
        if self.num_workers < 0:
            raise ValueError(
                f"data.num_workers={self.num_workers} is invalid: use 0 to load in the "
                "training process or a positive number of worker processes."
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={self.val_fraction} must lie in (0, 1).")
        if self.source == "hub" and not self.hf_path:
            raise ValueError("data.source=hub needs data.hf_path, a Hugging Face dataset name.")
        if self.source == "path" and not self.path:
            raise ValueError("data.source=path needs data.path, a text file or a folder.")


@dataclass
class TokenizerConfig:
    """Tokenizer type; vocab_size applies to bpe only."""

    type: str = "bpe"
    vocab_size: int = 2048
    min_frequency: int = 2

    def __post_init__(self) -> None:
        _check_choice("tokenizer.type", self.type, TOKENIZER_TYPES)
        if self.type == "bpe" and self.vocab_size < 257:
            raise ValueError(
                f"tokenizer.vocab_size={self.vocab_size} is too small for byte-level BPE: "
                "use at least 257 (256 bytes plus one merge)."
            )


@dataclass
class TrainerConfig:
    """Arguments for lightning.Trainer plus the run's step budget."""

    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    max_steps: int = 1000
    val_check_interval: int = 250
    """Run the sampled validation every this many training steps."""
    limit_val_batches: int = 20
    log_every_n_steps: int = 10
    gradient_clip_val: float = 1.0
    """Max global gradient norm; 0 disables clipping (the norm is still logged)."""
    checkpoint_every_n_steps: int = 250
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
        _check_positive("trainer.max_steps", self.max_steps)
        _check_positive("trainer.devices", self.devices)
        _check_positive("trainer.val_check_interval", self.val_check_interval)
        _check_positive("trainer.log_every_n_steps", self.log_every_n_steps)
        _check_positive("trainer.checkpoint_every_n_steps", self.checkpoint_every_n_steps)
        if self.gradient_clip_val < 0:
            raise ValueError(f"trainer.gradient_clip_val={self.gradient_clip_val} is negative.")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to min_lr_ratio * lr."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 100

    def __post_init__(self) -> None:
        _check_positive("optim.lr", self.lr)
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be >= 0.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio} must lie in [0, 1].")


@dataclass
class GuardConfig:
    """Numerical guard: what a NaN/Inf loss or gradient or a loss spike does to a run."""

    enabled: bool = True
    skip_nonfinite: bool = False
    """Skip steps with a NaN/Inf loss or gradient (and count them) instead of stopping."""
    max_skipped_steps: int = 10
    """With skip_nonfinite, stop once more than this many steps were skipped."""
    spike_factor: float = 4.0
    """Stop when the loss exceeds this many times its recent mean; 0 disables the check."""
    spike_window: int = 20
    """Steps in the recent mean; the spike check starts once the window is full."""

    def __post_init__(self) -> None:
        if self.spike_factor != 0 and self.spike_factor <= 1:
            raise ValueError(
                f"guard.spike_factor={self.spike_factor} is invalid: use a factor above 1, "
                "or 0 to disable the spike check."
            )
        _check_positive("guard.spike_window", self.spike_window)
        if self.max_skipped_steps < 0:
            raise ValueError(f"guard.max_skipped_steps={self.max_skipped_steps} is negative.")


@dataclass
class LoggerConfig:
    """Experiment tracker: wandb (offline unless an account is configured), csv or none."""

    type: str = "wandb"
    project: str = "tinyseek"
    entity: str | None = None
    mode: str | None = None
    """online, offline or disabled; None means WANDB_MODE, else online with a key, else offline."""
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_choice("logger.type", self.type, LOGGER_TYPES)


@dataclass
class TrainConfig:
    """Root config of pipelines/train.py."""

    seed: int = 0
    name: str = "${model.attention}-${model.ffn_label}-${precision.name}${mtp.label}-s${seed}"
    """Variant name: the axis values joined by '-' with the seed last."""
    run_dir: str = "runs/adhoc/${name}"
    """Output folder; the DVC pipeline passes runs/<variant> explicitly."""
    ablation: str = "adhoc"
    """Ablation this run belongs to: the W&B group."""
    resume: bool = True
    """Continue from run_dir/checkpoints/last.ckpt when it exists."""
    restart_on_change: bool = False
    """Train from scratch, instead of stopping, when run_dir's checkpoint comes from another
    configuration or other tinyseek code; the DVC pipeline sets it."""
    init_from: str | None = None
    """A local Llama or DeepseekV3 transformers checkpoint folder to start training from."""
    compile: bool = False
    """Compile the model with torch.compile (needs a C++ compiler on CPU)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    mtp: MTPConfig = field(default_factory=MTPConfig)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} is invalid: use a non-negative integer.")
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len="
                f"{self.model.max_seq_len}: lower data.seq_len or raise model.max_seq_len."
            )
        if self.optim.warmup_steps > self.trainer.max_steps:
            raise ValueError(
                f"optim.warmup_steps={self.optim.warmup_steps} exceeds trainer.max_steps="
                f"{self.trainer.max_steps}: lower the warmup or train longer."
            )
        if self.mtp.depth >= self.data.seq_len:
            raise ValueError(
                f"mtp.depth={self.mtp.depth} leaves no positions in windows of data.seq_len="
                f"{self.data.seq_len}: use a depth below the window length."
            )
        tile = self.precision.tile
        if self.precision.fp8_recipe == "blockwise" and self.model.dim % tile != 0:
            raise ValueError(
                f"precision.tile={tile} does not divide model.dim={self.model.dim}, so no "
                "Linear on the residual stream could run blockwise FP8: set precision.tile "
                f"to a multiple of 16 that divides {self.model.dim} (64 or 32 for narrow models)."
            )


@dataclass
class PrepareConfig:
    """Root config of pipelines/prepare.py."""

    seed: int = 0
    out: str = "data/${data.name}"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class EvalConfig:
    """Settings of the evaluate stage."""

    batch_size: int = 16
    prompt_tokens: int = 32
    """Prompt length for the cached-decoding measurements."""
    decode_tokens: int = 64
    """Tokens generated when timing cached decoding."""
    sample_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 50

    def __post_init__(self) -> None:
        for key in ("batch_size", "prompt_tokens", "decode_tokens", "temperature", "top_k"):
            _check_positive(f"eval.{key}", getattr(self, key))


@dataclass
class EvaluateConfig:
    """Root config of pipelines/evaluate.py."""

    seed: int = 0
    run_dir: str = "???"
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig | None = None
    """Tracker; None reuses the trained run's logger settings."""


@dataclass
class ReportConfig:
    """Root config of pipelines/report.py."""

    runs: list[str] = field(default_factory=list)
    """Run folders, or folders to search for run folders (a multirun folder works)."""
    params_file: str | None = None
    """A params.yaml whose `ablation` axes name the runs, as runs_root/<variant>."""
    runs_root: str = "runs"
    out: str = "reports"
    baseline: str | None = None
    """Variant every other one is compared with; None takes the first run."""
    title: str = "tinyseek ablation"
    ablation: str = "adhoc"
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# Dense BF16 tensor-core peaks in FLOP/s from the vendors' datasheets (SXM parts, no sparsity).
# The H800 has the H100 SXM's compute; only its interconnect is cut down.
GPU_PEAK_BF16_FLOPS = {
    "H100": 989e12,
    "H800": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "A800": 312e12,
}


@dataclass
class CostConfig:
    """Training-cost projection of `python -m tinyseek.sizing`; unset values skip that part."""

    tokens: float | None = None
    """Training tokens to project, for example 14.8e12."""
    seq_len: int | None = None
    """Context length of the attention term; None takes model.max_seq_len."""
    gpu: str = "H800"
    """GPU whose dense BF16 peak is the MFU denominator: one of GPU_PEAK_BF16_FLOPS."""
    peak_flops: float | None = None
    """Per-GPU peak in FLOP/s; None takes the named GPU's BF16 dense peak."""
    mfu: float | None = None
    """Model FLOPs utilisation of the projection, in (0, 1]; None infers it from gpu_hours."""
    gpu_hours: float | None = None
    """A published GPU-hour figure for `tokens`, from which the implied MFU is computed."""
    price_per_hour: float = 2.0
    """Dollars per GPU-hour."""
    tokens_per_s: float | None = None
    """Measured training throughput of one run, for its device-hours (for example
    metrics.json's throughput.tokens_per_s)."""
    devices: int = 1
    """Devices that shared tokens_per_s."""

    def __post_init__(self) -> None:
        _check_choice("cost.gpu", self.gpu, tuple(GPU_PEAK_BF16_FLOPS))
        for key in ("tokens", "seq_len", "peak_flops", "gpu_hours", "tokens_per_s"):
            if getattr(self, key) is not None:
                _check_positive(f"cost.{key}", getattr(self, key))
        _check_positive("cost.devices", self.devices)
        if self.price_per_hour < 0:
            raise ValueError(f"cost.price_per_hour={self.price_per_hour} is negative.")
        if self.mfu is not None and not 0.0 < self.mfu <= 1.0:
            raise ValueError(f"cost.mfu={self.mfu} must lie in (0, 1], for example 0.4.")
        if (self.mfu is not None or self.gpu_hours is not None) and self.tokens is None:
            raise ValueError("cost.mfu and cost.gpu_hours need cost.tokens, the token budget.")

    @property
    def peak(self) -> float:
        return self.peak_flops if self.peak_flops is not None else GPU_PEAK_BF16_FLOPS[self.gpu]


@dataclass
class ExportConfig:
    """Root config of `python -m tinyseek.export`."""

    run_dir: str = "???"
    """Trained run folder whose checkpoints/last.ckpt is exported."""
    out: str = "${run_dir}/hf"
    """Folder that receives config.json, model.safetensors and the tokenizer files."""


@dataclass
class SizingConfig:
    """Root config of `python -m tinyseek.sizing`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cost: CostConfig = field(default_factory=CostConfig)


def register_configs() -> None:
    """Store the root schemas so the YAML roots can extend them."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="prepare_schema", node=PrepareConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="report_schema", node=ReportConfig)
    store.store(name="sizing_schema", node=SizingConfig)
    store.store(name="export_schema", node=ExportConfig)


def to_object(cfg: DictConfig) -> Any:
    """Resolve a composed config and build its dataclasses, running every validation rule.

    Keys added on the command line with `+key=value` bypass Hydra's schema check, so they
    are rejected here instead of being silently ignored.
    """
    unknown = _unknown_keys(cfg, prefix="")
    if unknown:
        raise ValueError(
            f"unknown config key(s): {', '.join(unknown)}. Check the spelling; "
            "`python pipelines/train.py --cfg job` lists every key."
        )
    return OmegaConf.to_object(cfg)


def _unknown_keys(node: DictConfig, prefix: str) -> list[str]:
    node_type = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(node_type):
        return []
    known = {f.name for f in dataclasses.fields(node_type)}
    unknown = [f"{prefix}{key}" for key in node.keys() if key not in known]
    for key in node.keys():
        child = node._get_node(key)
        if key in known and isinstance(child, DictConfig):
            unknown += _unknown_keys(child, prefix=f"{prefix}{key}.")
    return unknown
