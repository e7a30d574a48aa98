"""Expand a study preset (conf/experiment/<study>.yaml) into named runs, and select it for DVC.

A study preset is a Hydra experiment whose `hydra.sweeper.params` list the variants and seeds,
so `python pipelines/train.py -m experiment=<study>` sweeps it on any launcher. This module
composes each job of that sweep exactly as Hydra would and writes the resulting runs into
the `ablation` block of params.yaml, whose `runs` mapping dvc.yaml iterates over:

    python -m tinyseek.studies deepseek              # select the study, 3 seeds (the preset's)
    python -m tinyseek.studies attention --seeds 2   # seeds 0 and 1
    python -m tinyseek.studies moe --print           # print the block instead of writing it
    dvc exp run -S '~ablation' -S "+ablation=$(python -m tinyseek.studies moe --flow)"
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from tinyseek.config import register_configs
from tinyseek.io import write_text

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
AXES = ("attention", "ffn", "precision")


def list_studies(conf_dir: Path = CONF_DIR) -> list[str]:
    """Names of the experiment presets that define a sweep."""
    names = []
    for path in sorted((conf_dir / "experiment").glob("*.yaml")):
        sweep = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("sweeper", {})
        if sweep.get("params"):
            names.append(path.stem)
    return names


def sweep_jobs(params: dict[str, str]) -> list[list[str]]:
    """Expand sweeper params into one override list per job, in Hydra's basic-sweeper order."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
        for o in overrides
    ]
    return [list(job) for job in itertools.product(*choices)]


def expand_study(
    study: str, seeds: int | None = None, model: str = "small", conf_dir: Path = CONF_DIR
) -> dict[str, Any]:
    """Compose every job of a study and return its ablation block: name, baseline and runs.

    Each run maps its variant name (`<attention>-<ffn>-<precision>-s<seed>`, as the training
    config composes it) to the group options and seed that dvc.yaml passes to train.py.
    """
    available = list_studies(conf_dir)
    if study not in available:
        raise ValueError(f"study {study!r} not found: choose one of {', '.join(available)}.")
    if seeds is not None and seeds <= 0:
        raise ValueError(f"--seeds {seeds} is invalid: use a positive number of seeds.")

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        preset = compose("train", [f"experiment={study}"], return_hydra_config=True)
        params = dict(preset.hydra.sweeper.params)
        if seeds is not None:
            params["seed"] = ",".join(str(s) for s in range(seeds))
        runs: dict[str, dict[str, Any]] = {}
        for job in sweep_jobs(params):
            overrides = [f"experiment={study}", f"model={model}", *job]
            cfg = compose("train", overrides, return_hydra_config=True)
            choices = cfg.hydra.runtime.choices
            runs[cfg.name] = {axis: choices[axis] for axis in AXES} | {"seed": cfg.seed}

    first = next(iter(runs))
    return {
        "study": study,
        "name": study,
        "model": model,
        "baseline": re.sub(r"-s\d+$", "", first),
        "runs": runs,
    }


def render_block(ablation: dict[str, Any]) -> str:
    """Render the `ablation:` block of params.yaml, one flow-style line per run."""
    lines = [
        "# The study that `dvc repro` runs, written by `python -m tinyseek.studies "
        f"{ablation['study']}`;",
        "# edit the runs by hand or rerun that command. Stage instances, run folders and W&B",
        "# runs are named by the keys of `runs`: <attention>-<ffn>-<precision>-s<seed>.",
        "ablation:",
        f"  study: {ablation['study']}  # conf/experiment/<study>.yaml",
        f"  name: {ablation['name']}  # W&B group of every run",
        f"  model: {ablation['model']}  # conf/model/<name>.yaml",
        f"  baseline: {ablation['baseline']}  # the variant the others are compared with",
        "  runs:",
    ]
    for name, run in ablation["runs"].items():
        axes = ", ".join(f"{key}: {value}" for key, value in run.items())
        lines.append(f"    {name}: {{{axes}}}")
    return "\n".join(lines) + "\n"


def replace_block(params_text: str, block: str) -> str:
    """Swap the top-level `ablation:` block (with its leading comments) of a params file."""
    lines = params_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("ablation:")]
    if not starts:
        return block + "\n" + params_text
    start = starts[0]
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    end = starts[0] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    # Keep the blank line that separated the block from the next one.
    while end > starts[0] + 1 and not lines[end - 1].strip():
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tinyseek.studies",
        description="Write a study preset's runs into the ablation block of params.yaml.",
    )
    parser.add_argument("study", help=f"a preset in conf/experiment/: {', '.join(list_studies())}")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the preset's)")
    parser.add_argument("--model", default="small", help="model preset (default: small)")
    parser.add_argument("--params", default="params.yaml", help="params file to rewrite")
    parser.add_argument("--print", action="store_true", help="print the block, write nothing")
    parser.add_argument(
        "--flow",
        action="store_true",
        help="print the block as one flow-style value for `dvc exp run -S +ablation=...`",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        ablation = expand_study(args.study, args.seeds, args.model)
    except ValueError as err:
        parser.error(str(err))
    if args.flow:
        print(
            yaml.safe_dump(ablation, default_flow_style=True, width=10**6, sort_keys=False), end=""
        )
        return
    block = render_block(ablation)
    if args.print:
        print(block, end="")
        return
    path = Path(args.params)
    write_text(path, replace_block(path.read_text() if path.is_file() else "", block))
    log.info("%s now selects study %s; run `dvc repro`", path, args.study)


if __name__ == "__main__":
    main()
