"""The processes of a data-parallel torch run (torch.distributed), seen from one of them.

A process learns its place from the environment ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``);
``derivgen train --nproc N`` sets the same for the N processes it starts
(:mod:`symbolic.train.launch`), so both run the same code. Here: reading that place and
checking it against the options, the device, joining and leaving the process group (gloo
on the CPU, NCCL on CUDA devices, with a timeout so that a lost process is an error, not
a hang), the threads per process, and a test-only failure point.

Nothing here imports torch at module level: the NumPy path reads :func:`rank_from_env`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from symbolic.train.errors import TrainError

if TYPE_CHECKING:
    import torch

#: A collective that waits longer than this for another process fails (a process that
#: died is usually noticed at once, by its closed connection).
TIMEOUT = datetime.timedelta(minutes=5)
#: Test-only: ``RANK:STEP`` makes that process exit with :data:`FAIL_EXIT` as it starts
#: step STEP + 1, as if killed (no cleanup, no message).
FAIL_ENV = "DERIVGEN_TRAIN_FAIL_AT"
FAIL_EXIT = 17


@dataclass(frozen=True)
class Place:
    """Where a process stands in its run.

    Attributes:
        rank: Its rank among all processes (0 writes the files).
        world: The number of processes.
        local_rank: Its rank on its machine (its CUDA device's index).
        local_world: The number of processes on its machine (they share its cores).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1


def _env_int(name: str, default: int | None = None) -> int | None:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise TrainError(f"the environment's {name}={text!r} is not a number") from None


def rank_from_env() -> int:
    """This process's rank as ``torchrun`` (or ``--nproc``) set it; 0 outside a group."""
    return _env_int("RANK", 0)


def place_from_env() -> Place | None:
    """This process's place, when the environment describes a group of several (None
    otherwise)."""
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1 or "RANK" not in os.environ:
        return None
    rank = _env_int("RANK")
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    place = Place(rank, world, _env_int("LOCAL_RANK", rank % local_world), local_world)
    if not 0 <= place.rank < world or not 0 <= place.local_rank < place.local_world:
        raise TrainError(f"the environment's process ranks do not fit: {place}")
    return place


def check_place(place: Place | None, backend: str, nproc: int | None) -> None:
    """Raise :class:`TrainError` when the options do not fit the group this process is in.

    Args:
        place: The process's place (None: not in a group).
        backend: The run's backend.
        nproc: The ``--nproc`` option.
    """
    if place is None:
        return
    if backend != "torch":
        raise TrainError(
            f"a group of {place.world} processes (WORLD_SIZE): only --backend torch trains "
            f"data-parallel, not {backend}"
        )
    if nproc not in (None, 1, place.local_world):
        raise TrainError(
            f"--nproc {nproc} in a group of {place.local_world} processes on this machine "
            "(torchrun's --nproc-per-node starts them): drop --nproc"
        )


def pick_device(requested: str | None, place: Place) -> torch.device:
    """The device of this process: ``requested``, else its CUDA device when CUDA is
    present (by local rank), else the CPU."""
    import torch

    if requested is not None:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise TrainError(f"device {requested!r}: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainError(f"device {requested}: CUDA is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", place.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads(place: Place, cap: int | None) -> int:
    """The torch threads of a process: its share of the machine's cores,
    ``cores // local_world`` (at least one), so that N processes on one machine do not
    oversubscribe it; at most ``cap`` (the run's ``blas_threads``: the matrices here are
    small, and on a busy machine a second thread's synchronisation costs more than it
    saves, ten times over measured on 2 cores)."""
    share = max(1, cores() // place.local_world)
    return min(share, cap) if cap else share


def join(place: Place, device: torch.device) -> None:
    """Join the process group (``env://``)."""
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend, init_method="env://", rank=place.rank, world_size=place.world, timeout=TIMEOUT
        )
    except (RuntimeError, ValueError) as exc:
        raise TrainError(f"rank {place.rank}: cannot join the process group ({exc})") from None


def leave() -> None:
    """Leave the process group, if this process is in one."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def fail_step(rank: int) -> int | None:
    """The step at which this process is to exit (:data:`FAIL_ENV`), if any."""
    text = os.environ.get(FAIL_ENV)
    if not text:
        return None
    failing, _, step = text.partition(":")
    return int(step) if int(failing) == rank else None
