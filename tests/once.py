"""Work done once per test session, however many pytest-xdist workers need it.

A module-scoped fixture runs in every worker that runs one of its tests. Where the
fixture is costly (validating every regression spec, Numba compiling each), the first
worker to need it does the work and the others wait for it and read what it left: the
pattern pytest-xdist documents for session fixtures, with a file lock in the folder the
workers' temporary folders share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, bool]:
    """A folder of this test session that every worker sees under the same path, and
    whether this process is the only one (no pytest-xdist workers)."""
    base = tmp_path_factory.getbasetemp()
    alone = os.environ.get("PYTEST_XDIST_WORKER") is None
    folder = (base if alone else base.parent) / f"shared-{name}"
    folder.mkdir(exist_ok=True)
    return folder, alone


def once(tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[Path], object]):
    """``compute(folder)`` run by the first worker to ask, under a lock; its result (JSON)
    and whatever it wrote in ``folder`` are what every other worker gets."""
    folder, alone = shared_folder(tmp_path_factory, name)
    try:
        import fcntl
    except ImportError:  # no POSIX file locks: every worker computes its own
        alone = True
    if alone:
        return compute(folder)
    result = folder / "result.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.is_file():
            return json.loads(result.read_text(encoding="utf-8"))
        value = compute(folder)
        result.write_text(json.dumps(value), encoding="utf-8")
        return value
