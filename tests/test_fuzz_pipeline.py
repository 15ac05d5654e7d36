"""Differential fuzzing of the whole pipeline: random valid specs -> modules -> validation.

The strategy (``spec_strategies.py``) builds feedforward cells, recurrent cells with one
to three states, and costs, over every construct the spec language has. Each example is
parsed, generated for both backends and validated as ``derivgen generate`` validates it
(the reference interpreter, finite differences, the other backend). An example is either
accepted and validated, or refused with a clear error; a miscompilation fails the test.

CI runs a fixed-seed sample: every example validated with NumPy and checked statically
for Numba (it compiles, every name it reads is bound), and the first ``NUMBA_SAMPLE``
examples compiled by Numba and validated in full; the first ``JAX_STATIC_SAMPLE``
examples' JAX modules are checked statically too, and the first ``JAX_SAMPLE`` run by
JAX and validated in full (JAX compiles every shape validation tries: a second a spec). ``pytest --fuzz-long N`` runs
``N`` fresh examples through NumPy, Numba and JAX in full and writes a summary
(``fuzz-summary.json``: examples, accepted, refused by reason, miscompiled, time).
"""

from __future__ import annotations

import builtins
import collections
import functools
import json
import re
import symtable
import time
from pathlib import Path

import pytest
from spec_strategies import FEATURES, FuzzSpec, examples, specs

from symbolic import parse, validate
from symbolic.backends import UnsupportedSpec
from symbolic.generate import compile_model
from symbolic.render import render

#: Examples in CI's sample, how many of them Numba compiles and JAX runs, and how many
#: JAX modules are checked statically (JAX's share of the suite kept near 20 s).
SAMPLE = 300
NUMBA_SAMPLE = 16
#: Examples generated for the torch backend and validated in full (against the NumPy
#: module, the interpreter and finite differences, through both its plain functions and
#: autograd).
TORCH_SAMPLE = 40
JAX_SAMPLE = 16
JAX_STATIC_SAMPLE = 100
#: The backends of the long run.
LONG_BACKENDS = ("numpy", "numba", "jax")


def draw(count: int, *, derandomize: bool = True, seed: int | None = None) -> list[FuzzSpec]:
    """``count`` examples of the strategy (the same ones every run when derandomized)."""
    return examples(specs(), count, derandomize=derandomize, seed=seed)


@pytest.fixture(scope="module")
def sample() -> list[FuzzSpec]:
    return draw(SAMPLE)


def test_sample_covers_every_construct(sample):
    seen = set().union(*(example.features for example in sample))
    assert seen == FEATURES, f"never drawn: {sorted(FEATURES - seen)}"


def _refusal(exc: Exception) -> str:
    """The reason of a refusal, checked to name a file and (for specs) a line."""
    message = str(exc)
    assert re.match(r"^fuzz-\w+\.toml(:\d+)?: ", message), message
    return re.sub(r"'[^']*'", "'...'", message.split(": ", 1)[1])[:80]


def generated(example: FuzzSpec, backends) -> tuple[object, dict[str, str], dict[str, str]]:
    """(model, backend -> module text, backend -> refusal reason)."""
    model, compiled = _compiled(example.text, example.kind)
    texts, refused = {}, {}
    for backend in backends:
        try:
            texts[backend] = render(compiled, backend).text
        except UnsupportedSpec as exc:
            refused[backend] = _refusal(exc)
    return model, texts, refused


@functools.lru_cache(maxsize=SAMPLE)
def _compiled(text: str, kind: str):
    """An example parsed, derived and lowered once for every backend and test."""
    model = parse.loads(text, f"fuzz-{kind}.toml")
    return model, compile_model(model)


def test_sample_numpy_validated(sample, tmp_path):
    failures = []
    for index, example in enumerate(sample):
        model, texts, refused = generated(example, ["numpy"])
        assert not refused, refused
        path = validate.stage(texts["numpy"], f"{model.name}_numpy.py", tmp_path)
        job = validate.Job(str(model.path), model.text, [("numpy", str(path))])
        for verdict in validate.validate_job(job):
            if verdict.status == "bug":
                failures.append(f"example {index}: {verdict.message}\n{example.text}")
    assert not failures, "\n\n".join(failures[:5])


def unbound_names(source: str) -> set[str]:
    """Names a module's functions read that nothing binds (what would be a NameError)."""
    table = symtable.symtable(source, "<generated>", "exec")
    defined = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    defined |= {c.get_name() for c in table.get_children()}
    missing = set()

    def walk(scope):
        for child in scope.get_children():
            for sym in child.get_symbols():
                name = sym.get_name()
                if (
                    sym.is_referenced()
                    and sym.is_global()
                    and name not in defined
                    and not hasattr(builtins, name)
                ):
                    missing.add(f"{child.get_name()}: {name}")
            walk(child)

    walk(table)
    return missing


def test_unbound_names_finds_a_missing_name():
    assert unbound_names("def f():\n    return g + 1\n") == {"f: g"}
    assert unbound_names("import numpy as np\ndef f(x):\n    return np.sum(x)\n") == set()


def test_sample_numba_compiles_and_binds_every_name(sample):
    failures = []
    for index, example in enumerate(sample):
        _, texts, _ = generated(example, ["numba"])
        if "numba" not in texts:
            continue
        try:
            compile(texts["numba"], "<generated>", "exec")
        except SyntaxError as exc:
            failures.append(f"example {index}: {exc}\n{example.text}")
            continue
        missing = unbound_names(texts["numba"])
        if missing:
            failures.append(f"example {index}: unbound {sorted(missing)}\n{example.text}")
    assert not failures, "\n\n".join(failures[:5])


def run_both(
    examples: list[FuzzSpec],
    root: Path,
    workers: int | None = None,
    backends: tuple[str, ...] = ("numpy", "numba"),
) -> dict:
    """Every example through ``backends`` (NumPy first), validated in worker processes;
    a summary."""
    start = time.perf_counter()
    summary = {"examples": len(examples), "accepted": 0, "refused": collections.Counter()}
    jobs, texts_of = [], {}
    for index, example in enumerate(examples):
        try:
            model, texts, refused = generated(example, list(backends))
        except parse.SpecError as exc:
            summary["refused"][_refusal(exc)] += 1
            continue
        for backend, reason in refused.items():
            summary["refused"][f"{backend}: {reason}"] += 1
        if refused:
            continue
        spec = f"example-{index}.toml"
        modules = [
            (b, str(validate.stage(texts[b], f"{model.name}_{b}.py", root))) for b in backends
        ]
        jobs.append(validate.Job(spec, example.text, modules))
        texts_of[spec] = example.text
    verdicts = validate.run(jobs, workers=workers, progress=False)
    bugs = [v for v in verdicts if v.status == "bug"]
    cannot = {v.spec for v in verdicts if v.status == "cannot"}
    summary["accepted"] = len(jobs)
    summary["validated"] = len(jobs) - len({v.spec for v in bugs} | cannot)
    summary["not finite anywhere (cannot validate)"] = len(cannot)
    summary["miscompiled"] = len({v.spec for v in bugs})
    summary["failures"] = [f"{v.message}\n{texts_of[v.spec]}" for v in bugs]
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["refused"] = dict(summary["refused"])
    return summary


def test_numba_sample_validated_in_full(sample, tmp_path):
    summary = run_both(sample[:NUMBA_SAMPLE], tmp_path)
    assert summary["miscompiled"] == 0, "\n\n".join(summary["failures"][:5])
    assert summary["accepted"] >= NUMBA_SAMPLE // 2


def test_torch_sample_validated_in_full(sample, tmp_path):
    pytest.importorskip("torch")
    jobs, failures = [], []
    for index, example in enumerate(sample[:TORCH_SAMPLE]):
        model, texts, refused = generated(example, ["numpy", "torch"])
        assert not refused, refused
        modules = [
            (b, str(validate.stage(texts[b], f"{model.name}_{b}.py", tmp_path)))
            for b in ("numpy", "torch")
        ]
        jobs.append(validate.Job(f"example-{index}.toml", example.text, modules))
    for verdict in validate.run(jobs, progress=False):
        if verdict.status == "bug":
            failures.append(verdict.message)
    assert not failures, "\n\n".join(failures[:5])


def test_sample_jax_binds_every_name(sample):
    failures = []
    for index, example in enumerate(sample[:JAX_STATIC_SAMPLE]):
        _, texts, refused = generated(example, ["jax"])
        assert not refused, refused
        missing = unbound_names(texts["jax"])
        if missing:
            failures.append(f"example {index}: unbound {sorted(missing)}\n{example.text}")
    assert not failures, "\n\n".join(failures[:5])


def test_jax_sample_validated_in_full(sample, tmp_path):
    summary = run_both(sample[:JAX_SAMPLE], tmp_path, backends=("numpy", "jax"))
    assert summary["miscompiled"] == 0, "\n\n".join(summary["failures"][:5])
    assert summary["accepted"] >= JAX_SAMPLE // 2


def test_fuzz_long(request, tmp_path):
    """``pytest tests/test_fuzz_pipeline.py --fuzz-long N [--fuzz-seed S]``."""
    count = request.config.getoption("--fuzz-long")
    if not count:
        pytest.skip("the long run: pytest tests/test_fuzz_pipeline.py --fuzz-long 5000")
    seed = request.config.getoption("--fuzz-seed")
    summary = run_both(draw(count, derandomize=False, seed=seed), tmp_path, backends=LONG_BACKENDS)
    summary["seed"] = seed
    out = Path(request.config.getoption("--fuzz-summary"))
    out.write_text(json.dumps(summary, indent=2) + "\n")
    assert summary["miscompiled"] == 0, "\n\n".join(summary["failures"][:5])
