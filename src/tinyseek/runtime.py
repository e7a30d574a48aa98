"""Process set-up for the pipeline entry points: the one module that reads the environment."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException

from tinyseek.config import LoggerConfig
from tinyseek.tracking import resolve_wandb_mode
from tinyseek.training.guard import TrainingFault

log = logging.getLogger("tinyseek")


def setup_process() -> None:
    """Settings every entry point needs before any work starts."""
    # Tokenizers' thread pool must not be inherited by forked DataLoader or DDP workers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Offline W&B runs must outlive the temporary workspace of a queued DVC experiment.
    root = wandb_dir_outside_dvc_workspace(Path.cwd())
    if not os.environ.get("WANDB_DIR") and root != Path.cwd():
        os.environ["WANDB_DIR"] = str(root)


def wandb_settings(cfg: LoggerConfig) -> tuple[str, str]:
    """Return the W&B mode and the parent folder of wandb/ (WANDB_DIR or the working dir)."""
    mode = resolve_wandb_mode(cfg, os.environ, Path.home() / ".netrc")
    return mode, os.environ.get("WANDB_DIR", ".")


def wandb_dir_outside_dvc_workspace(cwd: Path) -> Path:
    """Return the repository root when cwd is a DVC experiment's temporary workspace.

    `dvc exp run --queue` and `--temp` run in <repo>/.dvc/tmp/exps/<tmp>/ and delete it
    afterwards, which would take offline W&B runs with it.
    """
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def data_dir() -> str | None:
    """Return the user's corpus folder, $TINYSEEK_DATA_DIR, or None when unset."""
    return os.environ.get("TINYSEEK_DATA_DIR") or None


def cache_dir() -> Path:
    """tinyseek's download cache: $TINYSEEK_CACHE_DIR, else $XDG_CACHE_HOME/tinyseek."""
    if os.environ.get("TINYSEEK_CACHE_DIR"):
        return Path(os.environ["TINYSEEK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinyseek"


def exit_on_invalid_input(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn invalid-input errors into one logged message and exit status 2.

    These are ValueError, FileNotFoundError and Lightning's MisconfigurationException (for
    example trainer=gpu on a machine without one). A TrainingFault (NaN, loss spike, failed
    checkpoint write) is logged the same way and exits with status 3.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (ValueError, FileNotFoundError, MisconfigurationException) as err:
            log.error("%s", err)
            sys.exit(2)
        except TrainingFault as err:
            log.error("%s", err)
            sys.exit(3)

    return wrapper
