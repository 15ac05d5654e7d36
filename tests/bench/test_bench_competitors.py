"""The frameworks' compile probe: a child process killed at its time budget."""

from __future__ import annotations

from symbolic.bench import competitors
from symbolic.bench.workloads import QUICK_WORKLOADS


def test_compile_probe_is_killed_at_its_budget():
    probe = competitors.probe_compile(
        "jax", "B1", "grn", QUICK_WORKLOADS["B1"].dims, "float64", budget=0.05
    )
    assert not probe.ok and probe.message.startswith("did not compile in")
