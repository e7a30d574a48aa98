"""Start the ranks of a one-machine DDP run as spawned processes, and lock run folders.

Spawning calls one function per rank instead of re-running the command line, so a rank
never re-runs a Hydra sweep or re-parses arguments.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


class RunDirBusy(ValueError):
    """Another process is training into the same run folder."""


@contextlib.contextmanager
def locked_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on run_dir/.lock for the whole job.

    A second job on the same folder (two sweeps with the same variant, started together)
    fails at once instead of interleaving writes. The lock dies with its process, so a
    SIGKILLed job leaves nothing to clean up.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunDirBusy(
                f"run_dir {run_dir} is in use by another training process (pid {holder}): "
                "wait for it to finish, or give this job its own run_dir."
            ) from err
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def free_local_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now, for the gloo/NCCL rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_ranks(fit_rank: Callable[..., Any], world_size: int, args: tuple) -> None:
    """Run fit_rank(rank, *args) in world_size spawned processes and wait for all of them.

    Each rank gets the environment Lightning reads for an externally launched DDP job, so
    Lightning joins the process group instead of launching processes itself.
    """
    port = free_local_port()
    # NOTE: the port is free when chosen; another program could take it before rank 0 binds.
    mp.start_processes(
        _rank_entry,
        args=(fit_rank, world_size, port, args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )


def _rank_entry(
    rank: int, fit_rank: Callable[..., Any], world_size: int, port: int, args: tuple
) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
            "WORLD_SIZE": str(world_size),
        }
    )
    fit_rank(rank, *args)
