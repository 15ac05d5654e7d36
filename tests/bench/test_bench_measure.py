"""The measurement: rows checked against the oracle before they are timed, missing
frameworks skipped, and the relative error the check uses."""

from __future__ import annotations

import io
import math
import re
import time

import numpy as np
import pytest

from symbolic.bench import competitors, reference
from symbolic.bench.measure import Bench, Settings, relative_error
from symbolic.bench.prepared import Prepared
from symbolic.bench.report import section_table
from symbolic.bench.workloads import QUICK_WORKLOADS, Problem


def _quick(workload: str, backends: list[str], **options) -> Settings:
    """Settings for a fast in-test run of one quick workload in float64."""
    settings = dict(repeats=2, min_sample_ms=0.1, settle=0.0, quick=True, log=io.StringIO())
    return Settings(
        workloads=[QUICK_WORKLOADS[workload]],
        dtypes=["float64"],
        backends=backends,
        **(settings | options),
    )


def _perturbed_reference(scale: float):
    """The hand-written GRN with the largest entry of one gradient multiplied by ``scale``."""

    def factory(problem: Problem) -> Prepared:
        def step():
            cost, grads = reference.grn_step(problem.params, problem.x, problem.y)
            grads = dict(grads)
            grads["WTc"] = grads["WTc"].copy()
            grads["WTc"][np.argmax(np.abs(grads["WTc"]))] *= scale
            return cost, grads

        return Prepared(step, lambda result: result)

    return factory


def test_a_competitor_with_wrong_gradients_is_rejected_and_not_timed():
    settings = _quick(
        "B1",
        ["numpy"],
        extra={
            "off": ("slightly wrong", _perturbed_reference(1 + 1e-5)),
            "exact": ("exact copy", _perturbed_reference(1.0)),
        },
    )
    (section,) = Bench(settings).run()
    off, exact = section.row("off"), section.row("exact")
    assert off.status == "rejected" and not off.timed
    assert "WTc" in off.reason and off.check_error > 1e-6
    assert exact.status == "ok" and exact.timed and exact.check_error <= 1e-12
    table = "\n".join(section_table(section))
    assert "rejected: gradient check failed" in table
    assert "REJECTED" in settings.log.getvalue()


def test_the_grn_bound_reports_its_products_alone_and_its_transcendentals():
    """The GRN's bound row says what its two parts take, each timed on its own: the
    products alone (the lower bound) and the pass of exp and tanh; the section's table
    carries that under the bound's row."""
    settings = _quick("B2", ["numpy", "gemm"])
    (section,) = Bench(settings).run()
    bound = section.row("gemm")
    assert bound.timed
    note = "; ".join(bound.notes)
    found = re.search(
        r"matrix products alone ([0-9.e+-]+) ms and the pass of exp and tanh ([0-9.e+-]+) ms",
        note,
    )
    assert found, bound.notes
    products, transcendentals = (float(v) for v in found.groups())
    assert 0 < products and 0 < transcendentals
    assert found.group(0) in "\n".join(section_table(section))


def test_relative_error():
    grads = {"W": np.array([[1.0, -2.0]]), "B": np.array([0.5])}
    assert relative_error((2.0, grads), (2.0, dict(grads))) == (0.0, "cost")
    error, where = relative_error((2.0, grads), (2.0, {**grads, "B": np.array([0.5001])}))
    assert where == "B" and error == pytest.approx(2e-4)
    assert relative_error((2.0, grads), (2.0, {"W": grads["W"]}))[0] == math.inf
    nan = {**grads, "W": np.array([[np.nan, 0.0]])}
    assert relative_error((2.0, grads), (2.0, nan)) == (math.inf, "W")
    assert relative_error((2.0, grads), (2.2, grads))[0] == pytest.approx(0.1)


def test_missing_frameworks_are_skipped_with_a_note(monkeypatch):
    def missing():
        raise competitors.Unavailable("not installed here")

    monkeypatch.setattr(competitors, "_import_torch", missing)
    monkeypatch.setattr(competitors, "_import_jax", missing)
    settings = Settings(
        workloads=[QUICK_WORKLOADS["A1"]],
        dtypes=["float32"],
        backends=["numpy", "torch", "torch.compile", "jax"],
        repeats=1,
        min_sample_ms=0.1,
        settle=0.0,
        compile_budget=0,  # no child process: the monkeypatch must apply
        quick=True,
        log=io.StringIO(),
    )
    (section,) = Bench(settings).run()
    for key in ("torch", "torch.compile", "jax"):
        row = section.row(key)
        assert row.status == "skipped" and row.reason == "not installed here"
    assert section.row("numpy").timed


@pytest.mark.parametrize("module", ["generated.highway_numba", "generated.grn_numba"])
def test_first_call_runs_every_kind_of_numba_module(tmp_path, module):
    """The first-call section calls each module with inputs it accepts (an elementwise
    input needs n_in = n_out) and nothing compiles at import."""
    pytest.importorskip("numba")
    from symbolic.bench.runner import first_call

    cold = first_call(module, str(tmp_path))
    warm = first_call(module, str(tmp_path))
    assert cold["compiled_at_import"] == [] and warm["compiled_at_import"] == []
    assert cold["first"] > 0 and warm["first"] >= 0


def _spread_settings(processes: int) -> Settings:
    return _quick("B1", ["numpy", "reference"], repeats=4, processes=processes)


def test_a_rows_samples_come_from_as_many_child_processes_as_asked(monkeypatch):
    """With --processes 2 and 4 rounds, each child row takes 2 rounds in one process and 2
    in a fresh one; with 1, every sample comes from the same process."""
    from symbolic.bench.runner import Child

    pids: dict[str, list[int]] = {}
    real_sample = Child.sample

    def sample(self, steps, settle):
        pids.setdefault(self.request_backend, []).append(self.proc.pid)
        return real_sample(self, steps, settle)

    real_init = Child.__init__

    def init(self, request, policy="module"):
        self.request_backend = request["backend"]
        real_init(self, request, policy)

    monkeypatch.setattr(Child, "sample", sample)
    monkeypatch.setattr(Child, "__init__", init)
    for processes, expected in ((2, 2), (1, 1)):
        pids.clear()
        settings = _spread_settings(processes)
        (section,) = Bench(settings).run()
        for key in ("numpy", "reference"):
            row = section.row(key)
            assert row.status in ("ok", "oracle") and len(row.samples) == 4, row.reason
            assert row.processes == expected
            assert len(set(pids[key])) == expected
            assert pids[key][:2] == [pids[key][0]] * 2 and pids[key][2:] == [pids[key][-1]] * 2
        assert ("fresh child processes" in settings.log.getvalue()) == (processes > 1)


def _second_process_fails(monkeypatch, backend: str) -> None:
    """The row ``backend`` gets its first child process, and no other."""
    from symbolic.bench import candidates

    real = candidates._in_child
    built = []

    def flaky(request, policy):
        built.append(request["backend"])
        if request["backend"] == backend and built.count(backend) > 1:
            raise RuntimeError("no more processes")
        return real(request, policy)

    monkeypatch.setattr(candidates, "_in_child", flaky)


def test_a_row_whose_fresh_process_fails_says_so_and_is_not_timed(monkeypatch):
    _second_process_fails(monkeypatch, "reference")
    settings = _spread_settings(2)
    (section,) = Bench(settings).run()
    row = section.row("reference")
    assert row.status == "failed" and not row.timed and row.prepared is None
    assert "fresh child process failed: no more processes" in row.reason
    assert section.row("numpy").timed and len(section.row("numpy").samples) == 4
    table = "\n".join(section_table(section))
    assert "no more processes" in table


def test_when_a_shared_process_fails_the_policy_rows_in_it_fail_with_it(monkeypatch):
    """numba[blas1] and numba[numba1] take their samples in the plain numba row's process:
    when its fresh one fails, they stop too and say why."""
    pytest.importorskip("numba")
    _second_process_fails(monkeypatch, "numba")
    rows = ["numba", "numba[blas1]", "numba[numba1]"]
    (section,) = Bench(_quick("B1", rows, repeats=4, processes=2)).run()
    assert "fresh child process failed: no more processes" in section.row("numba").reason
    for key in rows[1:]:
        row = section.row(key)
        assert row.shared and row.status == "failed" and not row.timed, key
        assert row.reason.startswith("the process it shares failed")


def test_the_product_row_takes_out_the_time_of_the_product_alone():
    from symbolic.bench import runner

    square = runner._numpy_product(np.dtype(np.float64))()
    assert square.shape == (runner.PRODUCT_SIDE, runner.PRODUCT_SIDE)
    calls = []
    module = Prepared(lambda: calls.append(1), lambda result: (math.nan, {}))

    def product():  # a fixed 2 ms, unlike a real product on a loaded machine
        time.sleep(0.002)

    state = {"product": product, "prepared": runner._after_a_product(module, product)}
    reply = runner._handle(state, {"cmd": "sample", "steps": 20, "settle": 0.0}, 0.0)
    assert len(calls) == 20  # every step ran the module's step after its product
    # the product takes far longer than an empty step: what is left is the step's
    assert reply["seconds"] < 0.001


def test_the_product_row_charges_the_step_for_slowing_the_product():
    """A step that leaves the product 3 ms slower (as spinning threads do) is charged for
    it: the row subtracts the product's time alone, not its time beside the step."""
    from symbolic.bench import runner

    after_a_step = []

    def product():
        time.sleep(0.003 if after_a_step else 0.0)
        after_a_step.clear()

    module = Prepared(lambda: after_a_step.append(1), lambda result: (math.nan, {}))
    state = {"product": product, "prepared": runner._after_a_product(module, product)}
    reply = runner._handle(state, {"cmd": "sample", "steps": 10, "settle": 0.0}, 0.0)
    assert reply["seconds"] >= 0.0025


def test_a_product_row_sample_stays_a_positive_time():
    """A step that makes the product faster than alone (noise, for a tiny step) leaves a
    negative difference: the sample reports the least positive time instead."""
    from symbolic.bench import runner

    after_a_step = []

    def product():
        time.sleep(0.0 if after_a_step else 0.002)
        after_a_step.clear()

    module = Prepared(lambda: after_a_step.append(1), lambda result: (math.nan, {}))
    state = {"product": product, "prepared": runner._after_a_product(module, product)}
    reply = runner._handle(state, {"cmd": "sample", "steps": 5, "settle": 0.0}, 0.0)
    assert reply["seconds"] == runner.SHORTEST_LEFT


def test_the_idle_thread_waits_until_released():
    import threading

    from symbolic.bench import runner

    before = threading.active_count()
    release = runner._idle_thread()
    (thread,) = [t for t in threading.enumerate() if t.name == "derivgen-bench-idle"]
    assert thread.is_alive() and threading.active_count() == before + 1
    release.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_notebook_row_runs_after_a_product_with_another_python_thread_alive():
    """numba[notebook]: the product row's step, in a child process where another Python
    thread waits (the module then may not stop OpenBLAS's pool)."""
    pytest.importorskip("numba")
    (section,) = Bench(_quick("B1", ["numba", "numba[notebook]"], repeats=2)).run()
    row = section.row("numba[notebook]")
    assert row.timed and row.status != "failed", row.reason
    notes = " ".join(row.notes)
    assert "NumPy product before each step" in notes
    assert "another Python thread alive" in notes
    assert "another Python thread alive" not in " ".join(section.row("numba").notes)
