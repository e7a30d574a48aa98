"""Report provenance: git commit, pipeline lock hash, package versions and machine."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import yaml

PACKAGES = (
    "tinyseek",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "wandb",
    "dvc",
    "tokenizers",
    "numpy",
    "scipy",
    "matplotlib",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lock_hashes(lock_path: Path, stages: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Output hashes that dvc.lock records, per stage: {stage: {path: md5}}.

    `stages` keeps only those stage names (prepare and each run's train and evaluate); None
    keeps all. A missing dvc.lock gives an empty mapping, as for runs made outside DVC.
    """
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    hashes = {}
    for name, stage in (lock.get("stages") or {}).items():
        if stages is not None and name not in stages:
            continue
        outs = {out["path"]: out.get("md5", "") for out in stage.get("outs", [])}
        if outs:
            hashes[name] = outs
    return hashes


def provenance(
    commit: str | None, lock_path: Path = Path("dvc.lock"), stages: list[str] | None = None
) -> dict[str, Any]:
    """Record where the report's numbers come from: commit, dvc.lock, packages, machine."""
    return {
        "git_commit": commit,
        "dvc_lock_sha256": hashlib.sha256(lock_path.read_bytes()).hexdigest()
        if lock_path.is_file()
        else None,
        "dvc_lock_outs": lock_hashes(lock_path, stages),
        "packages": package_versions(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
