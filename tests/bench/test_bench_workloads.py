"""The workload table and the problems it makes."""

from __future__ import annotations

import numpy as np

from symbolic.bench.workloads import QUICK_WORKLOADS, WORKLOADS, make_problem, mlp_gemm_flops


def test_workload_table_and_problems():
    assert WORKLOADS["B2"].dims == {"T": 200, "B": 64, "D": 64, "H": 256}
    assert WORKLOADS["A2"].dims["sizes"] == [1024, 1024, 1024, 10]
    assert set(QUICK_WORKLOADS) == set(WORKLOADS)
    problem = make_problem(WORKLOADS["A1"], np.dtype("float32"))
    # 2 * batch * n_in * n_out per product: forward and weight gradient of every layer,
    # the input gradient of all but the first (whose input is the data).
    assert mlp_gemm_flops(problem) == 2 * 256 * (2 * 64 * 128 + 3 * 128 * 128 + 3 * 128 * 10)
    assert problem.x.dtype == np.float32 and problem.params["layer3.W"].shape == (10, 128)
