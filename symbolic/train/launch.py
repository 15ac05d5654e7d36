"""``derivgen train --nproc N``: start N processes on this machine, one per rank, and
watch them.

Each process gets the environment ``torchrun`` would give it (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``: a free port of
this machine) and runs the training function it is given, so a run started here and one
started by ``torchrun`` are the same code. Process 0 sends back its result; a process
that stops with a :class:`~symbolic.train.errors.TrainError` sends its message. When a
process dies, the others notice it at their next collective (a closed connection, or the
process group's timeout) and stop; those still running after :data:`GRACE` seconds are
terminated. The parent then raises one :class:`TrainError` naming the rank that failed
first and what the others said.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from symbolic.train.config import Config
from symbolic.train.errors import TrainError

#: Seconds the other processes get to stop on their own once one has failed.
GRACE = 60.0


def free_port() -> int:
    """A TCP port of this machine that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process(
    target: Callable[[Config], Any], config: Config, rank: int, nproc: int, port: int, queue
) -> None:
    """One process of the run: its environment, then ``target(config)``."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        outcome = target(config)
    except TrainError as exc:
        queue.put(("error", rank, str(exc)))
        raise SystemExit(2) from None
    except BaseException:
        queue.put(("error", rank, traceback.format_exc(limit=-1).strip().splitlines()[-1]))
        raise
    if rank == 0:
        queue.put(("result", rank, outcome))
    # Done, and everything written: leave without the interpreter's teardown, where a
    # torch.distributed thread still alive can abort the process (SIGABRT,
    # "terminate called without an active exception") after a run that succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(target: Callable[[Config], Any], config: Config, nproc: int) -> Any:
    """Run ``target(config)`` in ``nproc`` new processes; process 0's return value.

    Args:
        target: A module-level function (the new processes import it).
        config: The run's configuration (resolved and checked).
        nproc: The number of processes.

    Raises:
        TrainError: A process failed: which one, how, and what the others said.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    port = free_port()
    processes = [
        context.Process(target=_process, args=(target, config, rank, nproc, port, queue))
        for rank in range(nproc)
    ]
    for process in processes:
        process.start()
    messages: dict[int, str] = {}
    results: list[Any] = []
    try:
        _watch(processes, queue, messages, results)
    finally:
        for rank, process in enumerate(processes):
            if process.is_alive():
                process.terminate()
                messages.setdefault(rank, f"still running {GRACE:g} s later: terminated")
            process.join()
        _drain(queue, messages, results)
    codes = [process.exitcode for process in processes]
    if any(codes) or not results:
        raise TrainError(describe_failure(codes, messages))
    return results[0]


def _drain(queue, messages: dict[int, str], results: list[Any]) -> None:
    while not queue.empty():
        kind, rank, value = queue.get()
        if kind == "result":
            results.append(value)
        else:
            messages[rank] = value


def _watch(processes, queue, messages: dict[int, str], results: list[Any]) -> None:
    """Wait for every process to end, reading what they send; once one has failed,
    give the others :data:`GRACE` seconds."""
    deadline = None
    while True:
        _drain(queue, messages, results)
        alive = [process for process in processes if process.exitcode is None]
        if not alive:
            return
        if deadline is None and any(process.exitcode for process in processes):
            deadline = time.monotonic() + GRACE
        if deadline is not None and time.monotonic() > deadline:
            return
        multiprocessing.connection.wait([process.sentinel for process in alive], timeout=0.2)


def describe_failure(codes: list[int], messages: dict[int, str]) -> str:
    """One message: the rank that failed first (one that died without a word, if any),
    how, and what the other processes said."""
    failed = [rank for rank, code in enumerate(codes) if code]
    silent = [rank for rank in failed if rank not in messages]
    culprits = silent or failed or list(messages)
    parts = [f"process {rank} of {len(codes)} {_how(codes[rank])}" for rank in culprits]
    parts += [f"process {rank}: {text}" for rank, text in sorted(messages.items())]
    return "; ".join(parts) if parts else "process 0 returned no result"


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
