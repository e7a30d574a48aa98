"""Training throughput, MFU and peak memory of one attention x FFN x precision variant.

Each variant runs in its own forked process, so its peak resident memory is its own. Run
one by hand with: python -m benchmarks.train_variants tiny mla moe bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource

import torch

from benchmarks.common import random_batch, summarise_times, time_steps, train_config
from tinyseek.precision import convert_to_fp8
from tinyseek.sizing import count_active_parameters, train_flops_per_token
from tinyseek.training.flops import measure_peak_flops
from tinyseek.training.module import LanguageModel, update_biases


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def variant_overrides(size: str, attention: str, ffn: str, precision: str) -> list[str]:
    overrides = [f"model={size}", f"attention={attention}", f"ffn={ffn}", f"precision={precision}"]
    if precision == "fp8_blockwise":
        # The tile must divide model.dim; the tiny model is 64 wide.
        overrides.append("precision.tile=64" if size == "tiny" else "precision.tile=128")
    return overrides


def measure(size: str, attention: str, ffn: str, precision: str, steps: int) -> dict:
    """Time `steps` full training steps (forward, backward, clip, AdamW) of one variant."""
    cfg = train_config(variant_overrides(size, attention, ffn, precision))
    rss_before = _rss_bytes()
    torch.manual_seed(0)
    module = LanguageModel(cfg.model, cfg.optim, max_steps=10_000, grad_clip=1.0)
    if cfg.precision.fp8_recipe is not None:
        convert_to_fp8(module.model, cfg.precision.fp8_recipe, cfg.precision.tile)
    optimizer = module.configure_optimizers()["optimizer"]
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if cfg.precision.lightning.startswith("bf16")
        else contextlib.nullcontext()
    )
    batch = random_batch(cfg.data.batch_size, cfg.data.seq_len)

    def step() -> None:
        with autocast:
            loss = module.loss(batch)
            if module.moe_layers:
                loss = loss + module.model.aux_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if module.moe_layers:
            counts = torch.stack([moe.train_counts for moe in module.moe_layers])
            update_biases(module.moe_layers, counts, cfg.model.bias_update_speed)
            torch._foreach_zero_([moe.train_counts for moe in module.moe_layers])

    tokens = cfg.data.batch_size * cfg.data.seq_len
    seconds = [time_steps(step, steps=steps, warmup=2 if i == 0 else 0) for i in range(3)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The matmul peak is measured right after the steps, under the same machine load.
    # FP8 recipes run their other operations under BF16 autocast.
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    peak_flops = measure_peak_flops(dtype, torch.device("cpu"), seconds=0.3)
    flops_per_token = train_flops_per_token(module.model, cfg.model, cfg.data.seq_len)
    times = summarise_times(seconds, tokens)
    return {
        "size": size,
        "attention": attention,
        "ffn": ffn,
        "precision": precision,
        "batch_size": cfg.data.batch_size,
        "seq_len": cfg.data.seq_len,
        "params_active": count_active_parameters(module.model),
        "flops_per_token": flops_per_token,
        **times,
        "peak_flops_measured": peak_flops,
        "mfu": times["tokens_per_s"] * flops_per_token / peak_flops,
        "peak_rss_bytes": peak,
        "peak_rss_above_start_bytes": peak - rss_before,
    }


def _measure_into(connection, *args) -> None:
    try:
        connection.send(measure(*args))
    except Exception as err:  # reported as this variant's result row, not raised
        connection.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        connection.close()


def run_in_subprocess(size: str, attention: str, ffn: str, precision: str, steps: int) -> dict:
    """Measure one variant in a forked child, so its peak memory is its own, and return the row.

    A fork inherits the imported modules, which saves the seconds each interpreter start costs.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_measure_into, args=(sender, size, attention, ffn, precision, steps)
    )
    child.start()
    sender.close()
    row = receiver.recv()
    child.join()
    if "error" in row:
        row = {"size": size, "attention": attention, "ffn": ffn, "precision": precision, **row}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size")
    parser.add_argument("attention")
    parser.add_argument("ffn")
    parser.add_argument("precision")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (3 rounds)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    row = measure(args.size, args.attention, args.ffn, args.precision, args.steps)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
