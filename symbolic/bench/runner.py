"""The benchmark's child processes: each backend timed as a user's script runs it.

A user imports the generated modules into a plain Python process, with no thread
variables set and nothing else loaded. So ``derivgen bench`` times each of its rows in a
child process of its own, started with a clean environment (the thread variables of
OpenBLAS, OpenMP, MKL and Numba removed), where the modules apply their own thread
policy. The hand-picked policies are extra rows, each applied inside its child the way a
user would (threadpoolctl's limits, ``numba.set_num_threads``, or the environment), and
the "frameworks in the same process" row imports PyTorch and JAX and runs a step of each
before timing the generated module. The "product" row runs a NumPy product before each
step, as a script that computes between steps does, and takes out of each sample the
time of the same product run alone: what is left is the step's time and whatever the
step and the product cost each other. The "notebook" row does the same with another
Python thread alive and waiting, as a notebook's kernel has several.

Protocol: the parent writes one JSON command per line on the child's stdin and reads one
JSON line back (``prepare``, ``step``, ``calibrate``, ``sample``, ``quit``). Arrays (the
cost and gradients of a step, for the gradient check) travel through a ``.npz`` file. The
child times its steps as the parent times its own rows (``symbolic.bench.prepared``). The
reply to ``prepare`` gives ``first_seconds`` (the first step: a compile or a cache load),
``import_seconds`` (from the start of the child's loop until the build: the problem,
the frameworks' step, the policy), ``chosen`` (the module's own thread policy) and ``note``.

``first_call`` runs a generated Numba module's first call in a fresh process, cold (an
empty Numba cache) or warm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from symbolic.bench.competitors import JAX_JIT, TORCH_EAGER, prepare
from symbolic.bench.prepared import Prepared, Unavailable, seconds_per_step
from symbolic.bench.steps import build_backend, chosen_policy
from symbolic.bench.workloads import Problem, Workload, make_problem

#: Environment variables that set thread pools: removed from a child's environment.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
)

#: The hand-picked policies: how each is applied in a child.
#: ``module``: the module's own (nothing set); ``blas1``: BLAS limited to one thread
#: (threadpoolctl); ``numba1``: Numba on one thread; ``both``: both pools on every core,
#: nothing limited (the module sees a thread count set and leaves it); ``env``: both pools
#: with OPENBLAS_THREAD_TIMEOUT=1 and OMP_WAIT_POLICY=PASSIVE set before Python starts;
#: ``malloc``: the module's own thread policy, its memory policy not applied (glibc's
#: thresholds as the process started with them).
POLICIES = ("module", "blas1", "numba1", "both", "env", "malloc")
#: The hand-picked policies timed in the process of the module's own row, alternating with
#: it (``Shared``, ``_sample_policy``): the two a module chooses between, applied and
#: undone by hand as a user's script would. The others run in a process of their own:
#: ``env`` (read by the libraries as they load) and ``malloc`` (glibc's thresholds, which
#: the memory policy sets once) need one; ``both`` (both pools spinning on every core)
#: would leave its spinning threads and their effects to the samples after it.
IN_PROCESS = ("blas1", "numba1")


def clean_environment(policy: str = "module") -> dict[str, str]:
    """The environment of a child: the parent's, without thread variables, plus what the
    policy sets before Python starts."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if policy == "both":
        env["NUMBA_NUM_THREADS"] = str(os.cpu_count() or 1)
    elif policy == "env":
        env.update(OPENBLAS_THREAD_TIMEOUT="1", OMP_WAIT_POLICY="PASSIVE")
        env["NUMBA_NUM_THREADS"] = str(os.cpu_count() or 1)
    return env


class ChildError(RuntimeError):
    """The child process failed or answered with an error."""


class Child:
    """A backend prepared and timed in a child process (see the module docstring).

    It offers what the benchmark needs of a ``Prepared``: ``step`` (one step; its result
    for ``to_numpy``), ``to_numpy``, ``compile_seconds``, ``note``, ``calibrate``,
    ``sample`` (the seconds per step over a run of steps, timed in the child) and
    ``close``.
    """

    def __init__(self, request: dict[str, Any], policy: str = "module") -> None:
        self.folder = tempfile.mkdtemp(prefix="derivgen-bench-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "symbolic.bench.runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_environment(policy),
        )
        reply = self._ask({"cmd": "prepare", "policy": policy, "folder": self.folder, **request})
        self.compile_seconds = reply.get("first_seconds")
        self.import_seconds = reply.get("import_seconds")
        self.chosen = reply.get("chosen")
        self.note = reply.get("note", "")

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            tail = [x for x in err.strip().splitlines() if x.strip()][-1:]
            raise ChildError(tail[0][:200] if tail else "the child process ended")
        reply = json.loads(line)
        if "error" in reply:
            raise ChildError(reply["error"])
        return reply

    def step(self, policy: str | None = None) -> str:
        """One step in the child (under the hand-picked ``policy``, one of ``IN_PROCESS``,
        or the row's own); the path of the file its cost and gradients are in."""
        return self._ask({"cmd": "step", **_policy(policy)})["result"]

    @staticmethod
    def to_numpy(path: str) -> tuple[float, dict[str, np.ndarray]]:
        """The cost and gradients that ``step`` wrote."""
        with np.load(path) as archive:
            grads = {k: archive[k] for k in archive.files if k != "__cost__"}
            return float(archive["__cost__"]), grads

    def calibrate(self, warmup: int, settle: float = 0.0, policy: str | None = None) -> float:
        """Seconds of one step once warm, measured in the child (under ``policy``)."""
        command = {"cmd": "calibrate", "warmup": warmup, "settle": settle, **_policy(policy)}
        return float(self._ask(command)["seconds"])

    def sample(self, steps: int, settle: float, policy: str | None = None) -> float:
        """Seconds per step over ``steps`` consecutive steps, measured in the child (under
        ``policy``)."""
        command = {"cmd": "sample", "steps": steps, "settle": settle, **_policy(policy)}
        return float(self._ask(command)["seconds"])

    def close(self) -> None:
        """End the child and remove its files."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        for path in Path(self.folder).glob("*"):
            path.unlink(missing_ok=True)
        Path(self.folder).rmdir()


def _policy(policy: str | None) -> dict[str, str]:
    """The command's policy field: none for the row's own."""
    if policy is None:
        return {}
    if policy not in IN_PROCESS:
        raise ValueError(f"policy {policy!r} cannot be applied inside a running process")
    return {"policy": policy}


class Shared:
    """A hand-picked policy (one of ``IN_PROCESS``) timed in the child process of the
    module's own row, ``owner`` (a ``Row`` whose ``prepared`` is a ``Child``): each of its
    steps and samples runs under the policy, applied just before and undone just after.

    Rows in separate processes compare processes as much as policies: on a 2-core
    virtual machine one module's B2 step kept a median of 50.4 ms in one process and
    45.4 in another, same policy, same run. Here the two rows' samples alternate in one
    process, so their ratio within each round compares the policies alone.
    """

    compile_seconds = None
    chosen = None
    note = "timed in the process of the module's own row, alternating with it"
    to_numpy = staticmethod(Child.to_numpy)

    def __init__(self, owner: Any, policy: str) -> None:
        _policy(policy)  # one that can be applied here
        self.owner, self.policy = owner, policy

    @property
    def child(self) -> Child:
        """The owner's process (a fresh one after the owner's is replaced)."""
        child = self.owner.prepared
        if not isinstance(child, Child):
            raise ChildError("the module's own row has no process")
        return child

    def step(self) -> str:
        """One step under the policy (see ``Child.step``)."""
        return self.child.step(self.policy)

    def calibrate(self, warmup: int, settle: float = 0.0) -> float:
        """See ``Child.calibrate``."""
        return self.child.calibrate(warmup, settle, self.policy)

    def sample(self, steps: int, settle: float) -> float:
        """See ``Child.sample``."""
        return self.child.sample(steps, settle, self.policy)

    def close(self) -> None:
        """Nothing: the owner's row ends the process."""


# --- the child ----------------------------------------------------------------------------


def _frameworks(problem: Problem) -> str:
    """Import PyTorch and JAX and run a step of each (their thread pools now live here)."""
    ran = []
    for name in (TORCH_EAGER, JAX_JIT):
        try:
            prepared = prepare(name, problem)
            prepared.step()
            ran.append(name)
        except Unavailable:
            continue
    return ", ".join(ran)


#: The side of the square NumPy product that ``numba[product]`` runs before each step:
#: OpenBLAS runs it on its own threads (above 262,144 multiply-adds), and it leaves the
#: step most of the cache (3 arrays of 0.5 MiB in float64).
PRODUCT_SIDE = 256


def _numpy_product(dtype: np.dtype) -> Callable[[], Any]:
    """A NumPy product as a user's script runs it, BLAS on its own threads."""
    square = np.random.default_rng(0).standard_normal((PRODUCT_SIDE, PRODUCT_SIDE)).astype(dtype)
    return lambda: np.matmul(square, square)


def _after_a_product(prepared: Prepared, product: Callable[[], Any]) -> Prepared:
    """``prepared`` with ``product`` run before each step."""
    inner = prepared.step

    def step():
        product()
        return inner()

    return dataclasses.replace(prepared, step=step)


#: At least this many products timed alone for each sample of the product row.
PRODUCTS_ALONE = 20
#: The least a product row's sample reports (a sample must be a positive time).
SHORTEST_LEFT = 1e-9


def _idle_thread() -> threading.Event:
    """Start a Python thread that waits, as a notebook kernel's do, until the event it
    returns is set. A generated module stops OpenBLAS's spinning pool only where no other
    Python thread could be inside a product (templates/numba/_threads.py.j2), so this
    thread alone changes what the module may do."""
    release = threading.Event()
    threading.Thread(target=release.wait, name="derivgen-bench-idle", daemon=True).start()
    return release


def _product_alone(product: Callable[[], Any], steps: int) -> float:
    """Seconds per product run alone, back to back (the pool warm, nothing between them):
    what the product costs where no step takes its cores."""
    product()
    return seconds_per_step(product, max(steps, PRODUCTS_ALONE), 0.0)


def _serve() -> int:
    """The child's loop: one JSON command a line on stdin, one JSON reply a line back."""
    start = time.perf_counter()
    state: dict[str, Any] = {}
    for line in sys.stdin:
        command = json.loads(line)
        try:
            reply = _handle(state, command, start)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, one line
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if reply is None:
            return 0
        print(json.dumps(reply), flush=True)
    return 0


def _policy_context(policy: str) -> contextlib.AbstractContextManager:
    """Apply a hand-picked policy that is set from inside the process (see ``POLICIES``),
    as ``_sample_policy`` applies it around a sample."""
    return _sample_policy(policy) if policy in IN_PROCESS else contextlib.nullcontext()


@contextlib.contextmanager
def _sample_policy(policy: str | None) -> Iterator[None]:
    """Apply a hand-picked policy of ``IN_PROCESS`` around some steps, as a user's script
    would, and undo it after (None: the module's own policy, nothing applied).

    ``blas1``: threadpoolctl's limit of one BLAS thread; ``numba1``:
    ``numba.set_num_threads(1)``, then the count as it was."""
    if policy is None:
        yield
    elif policy == "blas1":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield
    elif policy == "numba1":
        import numba

        count = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(count)
    else:
        raise ValueError(f"policy {policy!r} cannot be applied inside a running process")


def _without_memory_policy() -> None:
    """Mark the memory policy of every generated module imported as applied, so that
    none changes glibc's thresholds (``_keep_freed_memory`` in the modules)."""
    for name, module in list(sys.modules.items()):
        done = getattr(module, "_memory_set", None) if name.startswith("generated.") else None
        if isinstance(done, list) and not done:
            done.append(True)


def _handle(state: dict[str, Any], command: dict[str, Any], start: float) -> dict | None:
    """The reply to one command (None for ``quit``); ``state`` holds the prepared row."""
    cmd = command["cmd"]
    if cmd == "quit":
        return None
    if cmd == "prepare":
        return _prepare(state, command, start)
    with _sample_policy(command.get("policy")):
        return _run(state, command)


def _run(state: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
    """The reply to ``step``, ``calibrate`` or ``sample``."""
    cmd = command["cmd"]
    prepared = state["prepared"]
    if cmd == "step":
        cost, grads = prepared.to_numpy(prepared.step())
        state["count"] += 1
        path = Path(state["folder"]) / f"result{state['count']}.npz"
        np.savez(path, __cost__=np.float64(cost), **grads)
        return {"result": str(path)}
    if cmd == "calibrate":
        return {"seconds": prepared.calibrate(command["warmup"], command.get("settle", 0.0))}
    if cmd == "sample":
        seconds = prepared.sample(command["steps"], command["settle"])
        if state.get("product") is not None:  # the pair's time less the product's alone
            left = seconds - _product_alone(state["product"], command["steps"])
            # a step far shorter than the product's spread can leave nothing, or less
            seconds = max(left, SHORTEST_LEFT)
        return {"seconds": seconds}
    raise ValueError(f"unknown command {cmd!r}")


def _prepare(state: dict[str, Any], command: dict[str, Any], start: float) -> dict[str, Any]:
    """Build the row under its policy and run its first step (which compiles)."""
    workload = Workload(command["workload"], command["kind"], command["dims"])
    problem = make_problem(workload, np.dtype(command["dtype"]), command["seed"])
    note = ""
    if command.get("frameworks"):
        note = f"after a step of {_frameworks(problem) or 'no framework (none installed)'}"
    context = _policy_context(command["policy"])
    context.__enter__()  # for the child's whole life
    imported = time.perf_counter()
    prepared = build_backend(command["backend"], problem)
    if command["policy"] == "malloc":
        _without_memory_policy()
    if command.get("product"):
        state["product"] = _numpy_product(problem.dtype)
        prepared = _after_a_product(prepared, state["product"])
        note = (
            f"a {PRODUCT_SIDE}x{PRODUCT_SIDE} NumPy product before each step; the time of the"
            " same product run alone taken out"
        )
    if command.get("thread"):
        state["idle"] = _idle_thread()
        note += "; another Python thread alive, waiting (as a notebook's kernel has several)"
    first = time.perf_counter()
    prepared.step()
    state.update(prepared=prepared, folder=command["folder"], count=0)
    chosen = chosen_policy(command["backend"], problem)
    return {
        "import_seconds": imported - start,
        "first_seconds": time.perf_counter() - first,
        "chosen": chosen,
        "note": "; ".join(x for x in (prepared.note, note) if x),
    }


# --- the first call of a module -------------------------------------------------------------


def first_call(module: str, cache: str) -> dict[str, float | bool]:
    """Import a generated Numba module and run its first step, in a child process whose
    Numba cache is ``cache`` (empty: a cold compile; filled by an earlier call: a warm
    start). Returns the seconds of the import and of the first forward and backward, and
    whether anything was compiled by the import itself."""
    code = f"""
import json, time
start = time.perf_counter()
import numpy as np, numba, importlib
mod = importlib.import_module({module!r})
imported = time.perf_counter()
compiled = [n for n, f in vars(mod).items()
            if isinstance(f, numba.core.dispatcher.Dispatcher) and f.signatures]
if mod.KIND == "cost":
    mod.loss(np.full((4, 5), 0.5), np.zeros((4, 5)))
else:
    n_in = 5 if getattr(mod, "INPUT_ELEMENTWISE", False) else 3  # n_in = n_out there
    params = mod.init_params(n_in, 5)
    lead = (4, 2) if mod.KIND == "recurrent" else (2,)
    a, cache = mod.forward(params, np.ones((*lead, n_in)))
    mod.backward(params, cache, np.ones_like(a))
print(json.dumps(dict(imported=imported - start, first=time.perf_counter() - imported,
                      compiled_at_import=compiled)))
"""
    env = clean_environment()
    env["NUMBA_CACHE_DIR"] = cache
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:]
        raise ChildError(tail[0] if tail else f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(_serve())
