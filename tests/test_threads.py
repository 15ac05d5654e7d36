"""The generated Numba modules' thread policy (templates/numba/_threads.py.j2).

Which pool each call runs alone follows from the sizes only, every count is restored when
the call ends (also when it raises), and thread counts the user set are left alone. The
counts are process-wide state, so the checks on them run in child processes with a clean
environment, as a user's script starts.
"""

from __future__ import annotations

import os
import textwrap
import threading

import numpy as np
import pytest
from cli_helpers import child_json

numba = pytest.importorskip("numba")
pytest.importorskip("threadpoolctl")

from generated import dense_sigmoid_numba, grn_numba, gru_numba  # noqa: E402

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def _grn_arrays(T: int, B: int, D: int, H: int):
    params = {"W": np.zeros((H, D)), "U": np.zeros(H)}  # only the shapes matter here
    return params, np.zeros((T, B, D))


def _dense_arrays(batch: int, n_in: int, n_out: int):
    return {"W": np.zeros((n_out, n_in)), "b": np.zeros(n_out)}, np.zeros((batch, n_in))


@pytest.mark.parametrize(
    ("module", "arrays", "expected"),
    [
        # the GRN at B2's sizes: elementwise work dominates, BLAS on one thread
        (grn_numba, _grn_arrays(200, 64, 64, 256), "blas1"),
        # at B1's and B3's, too little elementwise work in all for the loops' threads
        (grn_numba, _grn_arrays(50, 16, 16, 64), "numba1"),
        (grn_numba, _grn_arrays(1000, 8, 8, 32), "numba1"),
        # a 1024-wide input: the products dominate, the loops on one thread
        (grn_numba, _grn_arrays(50, 256, 1024, 256), "numba1"),
        # too little work for a parallel loop to pay for its launch
        (grn_numba, _grn_arrays(4, 2, 3, 5), "numba1"),
        # a dense layer of the large MLP: products dominate
        (dense_sigmoid_numba, _dense_arrays(1024, 1024, 1024), "numba1"),
        (dense_sigmoid_numba, _dense_arrays(8, 5, 7), "numba1"),
    ],
)
def test_the_policy_follows_the_sizes(module, arrays, expected):
    params, x = arrays
    assert module._threads(params, x).policy == expected


def test_the_policy_has_a_threshold_between_the_two_pools():
    """Widening the input moves a GRN from blas1 to numba1 once, and never back."""
    seen = []
    for width in (8, 64, 256, 512, 1024, 2048, 4096):
        params, x = _grn_arrays(200, 64, width, 256)
        seen.append(grn_numba._threads(params, x).policy)
    assert seen[0] == "blas1" and seen[-1] == "numba1"
    switch = seen.index("numba1")
    assert all(policy == "numba1" for policy in seen[switch:]), seen


def test_a_short_sequence_runs_its_loops_on_one_thread():
    """Where one loop covers every step, the call's elementwise work in all decides: a
    longer sequence moves a GRN from numba1 to blas1 once, and never back."""
    seen = []
    for steps in (1, 10, 50, 100, 200, 1000):
        params, x = _grn_arrays(steps, 64, 64, 256)
        seen.append(grn_numba._threads(params, x).policy)
    assert seen[0] == "numba1" and seen[-1] == "blas1"
    switch = seen.index("blas1")
    assert all(policy == "blas1" for policy in seen[switch:]), seen


def test_a_matrix_coupled_step_counts_one_step_of_lanes():
    """A coupled cell's parallel loop covers one step, so its lanes are B*H, not T*B*H."""
    params = {"W": np.zeros((16, 8)), "U": np.zeros((16, 16))}
    assert not gru_numba._ONE_LOOP and grn_numba._ONE_LOOP
    long_small = gru_numba._threads(params, np.zeros((10_000, 2, 8)))
    assert long_small.policy == "numba1"


def test_bad_arguments_get_no_policy_and_the_call_reports_them():
    policy = grn_numba._threads({}, np.zeros((3, 2, 4)))
    assert not hasattr(policy, "policy")
    with policy:  # entering and leaving changes nothing
        pass
    assert policy.undo == []


CHILD = textwrap.dedent(
    """
    import contextlib, json, sys
    import numba, numpy as np
    from threadpoolctl import ThreadpoolController, threadpool_limits
    from generated import grn_numba, dense_sigmoid_numba

    def counts():
        blas = {c.filepath: c.num_threads for c in ThreadpoolController().lib_controllers
                if c.user_api == "blas"}
        return {"numba": numba.get_num_threads(), "blas": blas, "split": grn_numba._split[0]}

    rng = np.random.default_rng(0)

    def grn(T, B, D, H):
        params = {name: rng.normal(size=shape) * 0.3 for name, shape in
                  grn_numba.param_shapes(D, H).items()}
        return params, rng.normal(size=(T, B, D))

    def dense(batch, n_in, n_out):
        params = {name: rng.normal(size=shape) * 0.1 for name, shape in
                  dense_sigmoid_numba.param_shapes(n_in, n_out).items()}
        return params, rng.normal(size=(batch, n_in))

    report = {"start": counts()}
    mode = sys.argv[1]
    if mode == "user-numba":
        numba.set_num_threads(1)
    with (threadpool_limits(1, user_api="blas") if mode == "user-blas" else contextlib.nullcontext()):
        report["before"] = counts()
        for module, (params, x) in ((grn_numba, grn(160, 64, 32, 128)),  # blas1
                                    (dense_sigmoid_numba, dense(256, 512, 512))):
            policy = module._threads(params, x)
            with policy:
                report.setdefault("inside", []).append(
                    [getattr(policy, "policy", None), counts()])
            out, cache = module.forward(params, x)
            module.backward(params, cache, np.ones_like(out))
            report.setdefault("after", []).append(counts())
        params, x = grn(50, 16, 16, 64)
        try:
            grn_numba.forward(params, x[..., :-1])  # the wrong input width raises
        except ValueError:
            report["after_error"] = counts()
    print(json.dumps(report))
    """
)


def _same(a: dict, b: dict) -> bool:
    """The same counts, for the BLAS libraries loaded in both (Numba may load another)."""
    common = a["blas"].keys() & b["blas"].keys()
    return a["numba"] == b["numba"] and all(a["blas"][k] == b["blas"][k] for k in common)


def _clean_env(*dropped: str) -> dict[str, str]:
    """This environment without the thread variables (and ``dropped``), as a user's
    script starts."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES + dropped}


def _child(mode: str, **env: str) -> dict:
    return child_json(CHILD, mode, {**_clean_env(), **env})


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.mark.skipif(_cores() < 2, reason="one core: no pool has threads to limit")
@pytest.mark.parametrize("internal", [True, False], ids=["numbas-c-functions", "public-ones"])
def test_numba1_lowers_numbas_count_for_the_call_and_restores_it(monkeypatch, internal):
    """The policy reads and sets Numba's count through the C functions behind
    numba.get_num_threads and numba.set_num_threads (cheaper per call), or through the
    public ones where a Numba version does not have them: the same counts either way."""
    from numba.np.ufunc import parallel

    module = dense_sigmoid_numba
    if module._USER_SET:
        pytest.skip("a thread variable is set: the policy is off")
    monkeypatch.setattr(module, "_counts", [])
    if not internal:
        monkeypatch.setattr(numba.np.ufunc, "parallel", object())  # names neither
    before = numba.get_num_threads()
    assert before == numba.config.NUMBA_NUM_THREADS > 1
    params, x = _dense_arrays(1024, 1024, 1024)
    call = module._threads(params, x)
    with call:
        assert call.policy == "numba1" and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    get, put = module._counts[0]
    if internal:
        assert (get, put) == (parallel._get_num_threads, parallel._set_num_threads)
    else:
        assert (get, put) == (numba.get_num_threads, numba.set_num_threads)


@pytest.mark.skipif(_cores() < 2, reason="one core: no pool has threads to limit")
def test_each_call_runs_one_pool_alone_and_restores_the_counts():
    report = _child("plain")
    start = report["before"]
    assert start["numba"] > 1
    (grn_policy, grn_inside), (mlp_policy, mlp_inside) = report["inside"]
    assert grn_policy == "blas1" and mlp_policy == "numba1"
    assert start["blas"] and all(count > 1 for count in start["blas"].values())
    assert all(grn_inside["blas"][k] == 1 for k in start["blas"])
    assert grn_inside["numba"] == start["numba"]
    assert grn_inside["split"] == start["numba"] and start["split"] == 1  # large products split
    assert mlp_inside["numba"] == 1
    assert all(mlp_inside["blas"][k] == start["blas"][k] for k in start["blas"])
    assert all(_same(after, start) for after in report["after"])
    assert _same(report["after_error"], start)


@pytest.mark.skipif(_cores() < 2, reason="one core: no pool has threads to limit")
@pytest.mark.parametrize(
    "variable", ["NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"]
)
def test_a_thread_variable_turns_the_policy_off(variable):
    report = _child("plain", **{variable: "2"})
    before = report["before"]
    for _policy, inside in report["inside"]:
        assert _same(inside, before)
    assert all(_same(after, before) for after in report["after"])


@pytest.mark.skipif(_cores() < 2, reason="one core: no pool has threads to limit")
@pytest.mark.parametrize(("mode", "pool"), [("user-numba", "numba"), ("user-blas", "blas")])
def test_a_count_the_user_lowered_is_left_alone(mode, pool):
    report = _child(mode)
    before = report["before"]
    if pool == "numba":
        assert before["numba"] == 1 < report["start"]["numba"]
        assert all(inside["numba"] == 1 for _policy, inside in report["inside"])
    else:
        assert before["blas"] and all(count == 1 for count in before["blas"].values())
        for _policy, inside in report["inside"]:
            assert all(inside["blas"][k] == 1 for k in before["blas"])
            assert inside["split"] == 1  # BLAS on one thread by the user's choice: no split
    assert all(_same(after, before) for after in report["after"])


SPIN = textwrap.dedent(
    """
    import ctypes, json, sys, threading, time
    import numba
    import numpy as np
    from generated import grn_numba, gru_numba

    rng = np.random.default_rng(0)
    mode = sys.argv[1]
    # BLAS on one thread for both calls: the GRN at B2's sizes is a long call, the GRU at
    # these a short one
    module = gru_numba if mode == "short" else grn_numba
    T, B, D, H = (50, 64, 16, 64) if mode == "short" else (200, 64, 64, 256)
    params = {name: rng.normal(size=shape) * 0.3 for name, shape in
              module.param_shapes(D, H).items()}
    x = rng.normal(size=(T, B, D))
    square = rng.normal(size=(256, 256))
    want = square @ square  # a threaded product: OpenBLAS's pool runs, then spins
    servers = [(pool, server) for pool, _, _, server in module._blas_pools() if server]
    if not servers:
        print(json.dumps({"server": False}))
        sys.exit()
    pool, _ = servers[0]
    running = ctypes.c_int.in_dll(ctypes.CDLL(pool.filepath), "blas_server_avail")
    waiting = threading.Event()
    if mode == "another thread":  # a thread that could be inside a product
        threading.Thread(target=waiting.wait).start()
    report = {"server": True, "count": pool.get_num_threads(), "before": running.value}
    report["native"] = [task for task, _ in module._NATIVE]
    report["python"] = [t.native_id for t in threading.enumerate()]
    report["numba_count"] = numba.config.NUMBA_NUM_THREADS
    policy = module._threads(params, x)
    report["policy"], report["long"] = policy.policy, policy.long
    if mode == "another thread":  # the policy inside a call, the worker spinning or asleep
        for case, pause in (("spinning", 0.0), ("asleep", 0.4)):
            square @ square
            time.sleep(pause)
            report[case + "_running"] = module._native_running()
            inside = module._threads(params, x)
            with inside:
                report[case] = [inside.policy, numba.get_num_threads(), pool.get_num_threads()]
    out, cache = module.forward(params, x)
    report["after_call"] = running.value
    report["count_after"] = pool.get_num_threads()
    report["product_right"] = bool(np.allclose(square @ square, want, rtol=1e-12, atol=0))
    report["after_product"] = running.value
    waiting.set()
    print(json.dumps(report))
    """
)


@pytest.mark.skipif(_cores() < 2, reason="one core: OpenBLAS runs no pool")
def test_a_long_call_stops_the_workers_a_product_of_the_callers_left_spinning():
    report = child_json(SPIN, "long", _clean_env())
    if not report["server"]:
        pytest.skip("this BLAS is not OpenBLAS running its own pthreads pool")
    assert report["policy"] == "blas1" and report["long"]
    assert report["count"] > 1 and report["before"] == 1
    assert report["after_call"] == 0  # the pool stopped by the call
    assert report["count_after"] == report["count"]  # the count given back
    assert report["product_right"]  # the caller's next product starts the pool again
    assert report["after_product"] == 1


@pytest.mark.skipif(_cores() < 2, reason="one core: OpenBLAS runs no pool")
@pytest.mark.parametrize("mode", ["another thread", "short"])
def test_the_pool_is_left_running_with_another_python_thread_or_for_a_short_call(mode):
    report = child_json(SPIN, mode, _clean_env())
    if not report["server"]:
        pytest.skip("this BLAS is not OpenBLAS running its own pthreads pool")
    assert report["policy"] == "blas1"
    assert report["long"] == (mode != "short")  # the restart would cost a short call more
    assert report["before"] == report["after_call"] == 1
    assert report["count_after"] == report["count"] and report["product_right"]


@pytest.mark.skipif(_cores() < 2, reason="one core: OpenBLAS runs no pool")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc: the look is left out")
def test_with_another_python_thread_a_long_call_runs_numba1_while_a_blas_worker_spins():
    """The worker a caller's product left spinning would take a core from the loops: the
    call runs its loops on one thread and its products on BLAS's threads (the pool that
    cannot be stopped); once the worker sleeps, blas1 again."""
    report = child_json(SPIN, "another thread", _clean_env())
    if not report["server"]:
        pytest.skip("this BLAS is not OpenBLAS running its own pthreads pool")
    # OpenBLAS's workers started with NumPy, before the module: taken for them, and no
    # Python thread among them
    assert report["native"] and not set(report["native"]) & set(report["python"])
    assert report["policy"] == "blas1" and report["long"]
    assert report["spinning_running"] and report["spinning"] == ["numba1", 1, report["count"]]
    assert not report["asleep_running"] and report["asleep"] == ["blas1", report["numba_count"], 1]
    assert report["before"] == report["after_call"] == 1  # never stopped
    assert report["count_after"] == report["count"] and report["product_right"]


IDLE = textwrap.dedent(
    """
    import json, os, time
    import numba
    import numpy as np
    from generated import grn_numba

    rng = np.random.default_rng(0)
    params = {name: rng.normal(size=shape) * 0.3 for name, shape in
              grn_numba.param_shapes(32, 128).items()}
    x = rng.normal(size=(160, 64, 32))  # blas1: the loops on both threads
    grn_numba.forward(params, x)  # the first call starts Numba's threads
    report = {"layer": numba.threading_layer(), "variable": os.environ.get("GOMP_SPINCOUNT")}
    idle = []
    for _ in range(3):  # the process's CPU time while the caller sleeps after a call
        grn_numba.forward(params, x)
        cpu = time.process_time()
        time.sleep(0.3)
        idle.append(time.process_time() - cpu)
    report["idle"] = idle
    print(json.dumps(report))
    """
)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@pytest.mark.skipif(_cores() < 2, reason="one core: Numba runs its loops on one thread")
@pytest.mark.parametrize(
    "user", [{}, {"GOMP_SPINCOUNT": "30000000000"}, {"OMP_WAIT_POLICY": "ACTIVE"}]
)
def test_numbas_threads_sleep_soon_after_a_call_unless_the_user_set_the_wait(user):
    """libgomp's default spin after a parallel loop (about 9 ms of a core) takes the core
    from the caller's next product; the module's first call starts Numba's threads with a
    short spin and puts the environment back. A wait the user set is theirs: with a
    spin that never ends, the same measurement sees a core busy through the caller's
    sleep (so the measurement can fail)."""
    report = child_json(IDLE, "idle", {**_clean_env(*WAIT_VARIABLES), **user})
    if report["layer"] != "omp":
        pytest.skip(f"Numba's threading layer is {report['layer']}, not libgomp")
    assert report["variable"] == user.get("GOMP_SPINCOUNT")  # the environment as it was
    if user:
        assert min(report["idle"]) > 0.1  # a worker spun through most of the 0.3 s
    else:
        assert sorted(report["idle"])[1] < 0.003  # asleep within 3 ms of the call (default: 9)


# --- the split products (``_matmul``) -------------------------------------------------------


def _openblas_gemm():
    """The gemm addresses of a BLAS library the module can call from its loops, or None."""
    return next((found for _, _, found, _ in grn_numba._blas_pools() if found), None)


@pytest.mark.parametrize("path", ["loops", "python threads"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("left", "right"),
    [
        ((3000, 64), (64, 512)),  # rows split: the input's projection
        ((64, 3001), (3001, 512)),  # columns split: a weight gradient (odd sizes)
        ((3001, 512), (512, 64)),  # rows split: the input's gradient
        ((5, 7), (7, 3)),  # too small: one product
    ],
)
def test_a_split_product_equals_the_product(monkeypatch, path, dtype, left, right):
    gemm = _openblas_gemm() if path == "loops" else None
    if path == "loops" and gemm is None:
        pytest.skip("BLAS is not OpenBLAS: its gemm is not called from the loops")
    calls = []
    real = grn_numba._gemm_parts

    def counted(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(grn_numba, "_gemm_parts", counted)
    monkeypatch.setattr(grn_numba, "_split", [3, gemm])
    rng = np.random.default_rng(0)
    a = rng.standard_normal(left).astype(dtype)
    b = rng.standard_normal(right).astype(dtype)

    def strided(m):  # the same values, in memory neither C- nor F-ordered
        return np.repeat(m, 2, axis=1)[:, ::2]

    cases = [(a, b), (np.asfortranarray(a), b), (a, np.asfortranarray(b))]
    cases += [(np.asfortranarray(a), np.asfortranarray(b)), (strided(a), b)]
    large = 2.0 * left[0] * left[1] * right[1] >= grn_numba._SPLIT_FLOPS
    for index, (x, y) in enumerate(cases):
        calls.clear()
        got = grn_numba._matmul(x, y)
        want = x @ y
        assert got.shape == want.shape and got.dtype == want.dtype
        tol = 1e-4 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
        # BLAS's gemm runs in the loops wherever it can read both operands as they are
        expected = path == "loops" and large and index < 4
        assert bool(calls) == expected, (index, calls)


@pytest.mark.skipif(_cores() < 2, reason="one core: nothing to split over")
def test_a_large_grn_step_splits_its_products_and_matches_numpy(monkeypatch):
    from generated import grn_numpy

    # with pytest's own threads alive, a worker an earlier test's product left spinning
    # would switch the calls to numba1 (tested on its own above)
    monkeypatch.setattr(grn_numba, "_native_running", lambda: False)

    rng = np.random.default_rng(1)
    T, B, D, H = 60, 64, 64, 256  # products of 2 * 3840 * 64 * 512 = 252 MFLOP
    params = {n: rng.normal(size=s) * 0.3 for n, s in grn_numpy.param_shapes(D, H).items()}
    x = rng.normal(size=(T, B, D))
    policy = grn_numba._threads(params, x)
    if getattr(policy, "policy", None) != "blas1" or numba.get_num_threads() < 2:
        pytest.skip("this process's thread counts were set by the user")
    splits = []
    real = grn_numba._matmul

    def counted(a, b, **options):
        splits.append(list(grn_numba._split))
        return real(a, b, **options)

    grn_numba._matmul, saved = counted, real
    try:
        a, cache = grn_numba.forward(params, x)
        grads, dx, _ = grn_numba.backward(params, cache, np.ones_like(a))
    finally:
        grn_numba._matmul = saved
    assert splits and all(parts == numba.get_num_threads() for parts, _ in splits)
    # where BLAS is OpenBLAS, the parts run in the loops' threads
    assert all(gemm == _openblas_gemm() for _, gemm in splits)
    assert grn_numba._split == [1, None]  # undone when the call ends
    want_a, want_cache = grn_numpy.forward(params, x)
    want_grads, want_dx, _ = grn_numpy.backward(params, want_cache, np.ones_like(want_a))
    np.testing.assert_allclose(a, want_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-9, atol=1e-9)
    for name, value in want_grads.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-9, atol=1e-9)


def _run_spinning_policy(monkeypatch, running, seconds: float, step: float = 0.01):
    """``_spinning_policy`` asked every ``step`` seconds of a simulated clock for
    ``seconds``, the worker ``running(now, policy of the call before)``: the policies
    as ``[(start, end, policy), ...]`` runs."""
    monkeypatch.setattr(
        grn_numba, "_spin", {"since": None, "starving": None, "feed_for": grn_numba._FEED_FOR}
    )
    runs, last = [], None
    for index in range(round(seconds / step)):
        now = index * step
        policy = grn_numba._spinning_policy(now, running(now, last))
        if runs and runs[-1][2] == policy:
            runs[-1][1] = now + step
        else:
            runs.append([now, now + step, policy])
        last = policy
    return runs


def test_a_worker_the_caller_keeps_feeding_gets_numba1_and_ever_rarer_tries_to_starve_it(
    monkeypatch,
):
    """A caller whose products keep OpenBLAS's worker spinning: the calls run numba1 (the
    products use the worker), and try one-thread calls (nothing feeds it) for
    _STARVE_FOR after _FEED_FOR, then after twice as long, up to _FEED_MAX."""
    runs = _run_spinning_policy(monkeypatch, lambda now, last: True, seconds=40.0)
    feeds = [end - start for start, end, policy in runs if policy == "numba1"]
    starves = [end - start for start, end, policy in runs if policy == "one"]
    assert {policy for *_, policy in runs} == {"numba1", "one"} and runs[0][2] == "numba1"
    want = [min(grn_numba._FEED_FOR * 2**k, grn_numba._FEED_MAX) for k in range(len(feeds))]
    assert feeds[:-1] == pytest.approx(want[:-1], abs=0.011)  # the last one cut by the end
    assert starves == pytest.approx([grn_numba._STARVE_FOR] * len(starves), abs=0.011)
    last_20s = sum(
        end - max(start, 20.0) for start, end, policy in runs if policy == "one" and end > 20
    )
    assert last_20s < 0.03 * 20  # the tries cost little once the caller is known


def test_a_worker_fed_only_by_the_calls_is_starved_asleep_then_blas1_for_good(monkeypatch):
    """One product of the caller's, then only the calls: their numba1 products keep the
    worker spinning (0.1 s after each) until calls on one thread let it sleep; from then
    on blas1, and the next product starts from _FEED_FOR again."""
    fed = [0.0]  # the caller's product at 0

    def running(now, last):
        if last == "numba1":
            fed[0] = now  # the call before fed the worker
        return now - fed[0] < 0.1

    runs = _run_spinning_policy(monkeypatch, running, seconds=2.0)
    assert [policy for *_, policy in runs] == ["numba1", "one", "blas1"]
    assert runs[0][1] == pytest.approx(grn_numba._FEED_FOR, abs=0.011)
    assert runs[1][1] - runs[1][0] <= 0.1 + 0.011  # asleep 0.1 s after the last feed
    assert grn_numba._spin == {"since": None, "starving": None, "feed_for": grn_numba._FEED_FOR}


@pytest.mark.skipif(_cores() < 2, reason="one core: no pool has threads to limit")
@pytest.mark.parametrize("policy", ["numba1", "one"])
def test_a_switched_call_sets_the_counts_of_its_policy_and_restores_them(monkeypatch, policy):
    """The wiring in ``_threads.__enter__``: a long blas1 call with another Python thread
    alive takes the policy ``_spinning_policy`` gives, and its counts: numba1 lowers
    Numba's count only, one lowers BLAS's too; both are restored."""
    params, x = _grn_arrays(200, 64, 64, 256)
    if getattr(grn_numba._threads(params, x), "policy", None) != "blas1":
        pytest.skip("this process's thread counts were set by the user")
    if not any(server for *_, server in grn_numba._blas_pools()):
        pytest.skip("this BLAS is not OpenBLAS running its own pthreads pool")
    monkeypatch.setattr(grn_numba, "_NATIVE", ((0, "/nonexistent"),))
    monkeypatch.setattr(grn_numba, "_native_running", lambda: True)
    monkeypatch.setattr(grn_numba, "_spinning_policy", lambda now, running: policy)

    def blas():  # the libraries the module found, as threadpoolctl reads them
        return [pool.get_num_threads() for pool, *_ in grn_numba._blas_pools()]

    before = (numba.get_num_threads(), blas())
    idle = threading.Event()
    thread = threading.Thread(target=idle.wait)  # another Python thread, as in a notebook
    thread.start()
    try:
        call = grn_numba._threads(params, x)
        with call:
            inside = (call.policy, numba.get_num_threads(), blas(), list(grn_numba._split))
    finally:
        idle.set()
        thread.join()
    assert inside[0] == policy and inside[1] == 1 and inside[3] == [1, None]  # no split
    assert inside[2] == (before[1] if policy == "numba1" else [1] * len(before[1]))
    assert policy == "numba1" or max(before[1]) > 1  # the one-thread call lowered BLAS
    assert (numba.get_num_threads(), blas()) == before
