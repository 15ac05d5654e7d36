"""The generated framework modules' steps (symbolic/bench/derived.py): on every quick
workload, their cost and gradients equal the generated NumPy step's (the benchmark's
oracle), and their rows are keyed apart from the frameworks' own."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic.bench import candidates, steps
from symbolic.bench.workloads import QUICK_WORKLOADS, make_problem


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("workload", ["A1", "B1"])
def test_derived_step_equals_the_numpy_step(backend, workload):
    pytest.importorskip(backend)
    problem = make_problem(QUICK_WORKLOADS[workload], np.dtype("float64"), seed=3)
    oracle = steps.generated(problem, "numpy")
    want_value, want = oracle.to_numpy(oracle.step())
    mine = steps.build_backend(steps.generated_key(backend), problem)
    value, got = mine.to_numpy(mine.step())
    assert value == pytest.approx(want_value, rel=1e-12)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-13)


def test_generated_framework_rows_are_keyed_apart_from_the_frameworks():
    assert steps.generated_key("torch") == "generated-torch"
    assert steps.generated_key("numba") == "numba"
    assert steps.generated_backend("generated-torch") == "torch"
    assert "generated-torch" in candidates.BACKENDS and "torch" not in candidates.BACKENDS
    assert candidates.parse_backends("generated-torch,torch") == ["generated-torch", "torch"]
