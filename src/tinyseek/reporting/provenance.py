"""Report provenance: git commit, pipeline lock hash, package versions and machine."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

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
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(commit: str | None, lock_path: Path = Path("dvc.lock")) -> dict[str, Any]:
    return {
        "git_commit": commit,
        "dvc_lock_sha256": hashlib.sha256(lock_path.read_bytes()).hexdigest()
        if lock_path.is_file()
        else None,
        "packages": package_versions(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
