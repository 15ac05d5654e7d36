"""The hand-picked policies a module chooses between (BLAS on one thread, Numba on one
thread) are timed in the process of the module's own row, alternating with it, each
sample under its policy, applied and undone by hand."""

from __future__ import annotations

import io

import pytest

from symbolic.bench.measure import Bench, Settings
from symbolic.bench.report import section_table, thread_note_lines
from symbolic.bench.runner import IN_PROCESS, Child, ChildError, Shared, _sample_policy
from symbolic.bench.workloads import QUICK_WORKLOADS

ROWS = ["numba", "numba[blas1]", "numba[numba1]", "numba[env]"]


def _settings(processes: int, backends: list[str] = ROWS) -> Settings:
    return Settings(
        workloads=[QUICK_WORKLOADS["B1"]],
        dtypes=["float64"],
        backends=backends,
        repeats=4,
        min_sample_ms=0.1,
        settle=0.0,
        quick=True,
        log=io.StringIO(),
        processes=processes,
    )


@pytest.fixture
def samples(monkeypatch):
    """Every sample a child process takes: (the child's row, the policy asked, its pid)."""
    pytest.importorskip("numba")
    pytest.importorskip("threadpoolctl")
    taken: list[tuple[str, str | None, int]] = []
    real_sample, real_init = Child.sample, Child.__init__

    def init(self, request, policy="module"):
        self.row_key = request["backend"]
        real_init(self, request, policy)

    def sample(self, steps, settle, policy=None):
        taken.append((self.row_key, policy, self.proc.pid))
        return real_sample(self, steps, settle, policy)

    monkeypatch.setattr(Child, "__init__", init)
    monkeypatch.setattr(Child, "sample", sample)
    return taken


def test_the_chosen_policies_share_the_own_rows_process_round_by_round(samples):
    """With two processes a row, the blas1 and numba1 rows take each round's sample in the
    process the plain row took its own from, under their policy; numba[env] in its own."""
    (section,) = Bench(_settings(2)).run()
    pids = {}
    for key, policy in (("numba", None), ("numba[blas1]", "blas1"), ("numba[numba1]", "numba1")):
        row = section.row(key)
        assert row.status == "ok" and len(row.samples) == 4, row.reason
        assert row.shared == (policy is not None)
        pids[key] = [pid for child, asked, pid in samples if (child, asked) == ("numba", policy)]
        assert len(pids[key]) == 4
    assert pids["numba[blas1]"] == pids["numba[numba1]"] == pids["numba"]
    assert len(set(pids["numba"])) == 2  # a fresh process after two rounds, shared by all three
    env = [pid for key, _, pid in samples if key == "numba[env]"]
    assert len(env) == 4 and not set(env) & set(pids["numba"])
    assert not section.row("numba[env]").shared
    table = "\n".join(section_table(section))
    assert "(BLAS limited to 1 thread by threadpoolctl), in the same process** | ok" in table
    # the shared rows compile nothing of their own: no compile time
    shared_line = next(line for line in table.splitlines() if "set_num_threads(1)), in the" in line)
    assert shared_line.split(" | ")[2] == "-"
    threads = "\n".join(thread_note_lines([section]))
    assert "| same |" in threads and "| its own |" in threads


def test_without_the_own_row_a_chosen_policy_gets_a_process_of_its_own(samples):
    (section,) = Bench(_settings(1, ["numba[blas1]"])).run()
    row = section.row("numba[blas1]")
    assert row.status == "ok" and not row.shared and len(row.samples) == 4
    assert {(key, policy) for key, policy, _ in samples} == {("numba[blas1]", None)}


def test_a_policy_applied_to_a_sample_is_undone_after_it():
    numba = pytest.importorskip("numba")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded

    def blas_threads():
        found = threadpoolctl.threadpool_info()
        return [pool["num_threads"] for pool in found if pool["user_api"] == "blas"]

    numba_before, blas_before = numba.get_num_threads(), blas_threads()
    with _sample_policy("numba1"):
        assert numba.get_num_threads() == 1
        assert blas_threads() == blas_before
    assert numba.get_num_threads() == numba_before
    with _sample_policy("blas1"):
        assert blas_threads() == [1] * len(blas_before)
        assert numba.get_num_threads() == numba_before
    assert blas_threads() == blas_before
    with _sample_policy(None):
        assert (numba.get_num_threads(), blas_threads()) == (numba_before, blas_before)
    with pytest.raises(ValueError, match="cannot be applied inside a running process"):
        with _sample_policy("env"):
            pass


def test_only_the_chosen_policies_can_share_a_process():
    assert IN_PROCESS == ("blas1", "numba1")
    with pytest.raises(ValueError, match="'both' cannot be applied"):
        Shared(None, "both")

    class Owner:
        prepared = None

    with pytest.raises(ChildError, match="own row has no process"):
        Shared(Owner(), "blas1").sample(1, 0.0)
