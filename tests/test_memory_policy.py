"""The generated modules' memory policy (templates/_memory.py.j2).

A module's first call raises glibc's mmap and trim thresholds once, so that the arrays a
step frees are reused by the next step instead of being returned to the system and
faulted in again; nothing happens at import, and a user's own malloc settings are left
alone. The thresholds are process-wide, so each check runs in a child process, and it
checks their effect, not the call: sixteen 1 MiB arrays filled, freed and filled again
(a small step's arrays) have their pages faulted in again under glibc's defaults (the
freed top of the heap is returned to the system) and not under the policy.
"""

from __future__ import annotations

import ctypes
import os
import sys
import textwrap

import pytest
from cli_helpers import child_json


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="the policy applies to glibc only")

CHILD = textwrap.dedent(
    """
    import importlib, json, resource, sys
    import numpy as np

    module = importlib.import_module("generated." + sys.argv[1])
    report = {"after_import": list(module._memory_set)}

    def refill_faults():
        # a step's worth of 1 MiB arrays (below NumPy's huge-page size), filled and
        # freed twice, then the faults of filling them a third time
        for _ in range(2):
            blocks = [np.ones(1 << 17) for _ in range(16)]
            del blocks
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [np.ones(1 << 17) for _ in range(16)]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del blocks
        return faults

    report["before_call"] = refill_faults()
    if module.KIND == "cost":
        module.loss(np.full((4, 5), 0.5), np.zeros((4, 5)))
    else:
        params = module.init_params(3, 5)
        lead = (4, 2) if module.KIND == "recurrent" else (2,)
        a, cache = module.forward(params, np.ones((*lead, 3)))
        module.backward(params, cache, np.ones_like(a))
    report["after_call"] = list(module._memory_set)
    report["after"] = refill_faults()
    print(json.dumps(report))
    """
)

# 16 MiB is 4,096 pages of 4 KiB: faulted in again, it takes thousands of faults.
REFAULTED = 2000
KEPT = 200


def _child(module: str, **env: str) -> dict:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    clean.update(env)
    return child_json(CHILD, module, clean)


@pytest.mark.parametrize(
    "module", ["dense_sigmoid_numpy", "grn_numpy", "squared_error_numpy", "grn_numba"]
)
def test_the_first_call_keeps_freed_memory_for_reuse(module):
    if module.endswith("_numba"):
        pytest.importorskip("numba")
    report = _child(module)
    assert report["after_import"] == []  # nothing at import
    assert report["before_call"] > REFAULTED  # glibc's defaults: unmapped, faulted again
    assert report["after_call"] == [True]
    assert report["after"] < KEPT  # reused from the heap


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072"),
    ],
)
def test_a_users_malloc_setting_is_left_alone(variable, value):
    report = _child("dense_sigmoid_numpy", **{variable: value})
    assert report["after_call"] == [True]
    assert report["after"] > REFAULTED
