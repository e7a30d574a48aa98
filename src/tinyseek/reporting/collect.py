"""Find run folders and load their metrics and histories."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tinyseek.io import read_json


@dataclass
class Run:
    """One evaluated run: its folder, metrics.json and history.csv rows."""

    path: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]

    @property
    def variant(self) -> str:
        return self.metrics["variant"]


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Expand paths into run folders: a path with metrics.json, else its subfolders with one."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"run folder not found: {path}. Check the runs=[...] list.")
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        below = sorted(p.parent for p in path.rglob("metrics.json"))
        if not below:
            raise FileNotFoundError(
                f"no metrics.json in or below {path}: evaluate the runs first "
                "(`python pipelines/evaluate.py run_dir=...`)."
            )
        found.extend(below)
    return list(dict.fromkeys(found))


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def runs_from_params(params_file: str | Path, runs_root: str | Path) -> list[Path]:
    """Run folders of the study in a params.yaml (`ablation.runs`), in the listed order."""
    params = OmegaConf.to_container(OmegaConf.load(params_file), resolve=True)
    runs = params.get("ablation", {}).get("runs")
    if not runs:
        raise ValueError(
            f"{params_file} has no `ablation.runs`: select a study with "
            "`python -m tinyseek.studies <study>`."
        )
    return [Path(runs_root) / name for name in runs]


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = [
        Run(path=d, metrics=read_json(d / "metrics.json"), history=read_history(d / "history.csv"))
        for d in find_run_dirs(paths)
    ]
    names = [run.variant for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"several run folders hold the same variant ({', '.join(duplicates)}): "
            "pass each variant once."
        )
    return runs
