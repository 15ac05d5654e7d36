"""Numba modules survive real use, each scenario in fresh Python processes.

Numba's on-disk cache records the name a module was imported under; a module loaded by
path under another name once made every later ``import generated.grn_numba`` fail with
ModuleNotFoundError until the cache was deleted. Here, a copy of ``generated/`` (with
no cache yet) is loaded under other names, registered or not, then imported as the
package; it is imported from a place with no writable cache; regenerated from a changed
spec; and run by several processes at once. Every run must give the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from symbolic.generate import default_out

pytest.importorskip("numba")

RUN = """
import importlib, importlib.util, json, sys
import numpy as np
how, name = sys.argv[1], sys.argv[2]
if how == "package":
    mod = importlib.import_module("generated." + name)
else:
    spec = importlib.util.spec_from_file_location("other_" + name, f"generated/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    if how == "registered":
        sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
params = mod.init_params(3, 4, seed=1)
shape = (5, 2, 3) if mod.KIND == "recurrent" else (2, 3)
x = np.random.default_rng(0).standard_normal(shape)
a, cache = mod.forward(params, x)
grads = mod.backward(params, cache, np.ones_like(a))[0]
print(json.dumps([float(a.sum()), float(sum(g.sum() for g in grads.values()))]))
"""


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the generated package with no Numba cache, and the runner script."""
    shutil.copytree(
        default_out(), tmp_path / "generated", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "run.py").write_text(RUN)
    return tmp_path


def run(folder: Path, how: str, name: str = "dense_sigmoid_numba", env: dict | None = None) -> list:
    out = subprocess.run(
        [sys.executable, "run.py", how, name],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(folder), **(env or {})},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_loaded_under_other_names_then_imported(copy):
    first = run(copy, "unregistered")
    assert run(copy, "registered") == first
    assert run(copy, "package") == first  # the cache made under other names is not read
    assert run(copy, "registered") == first  # warm, its own cache files
    assert run(copy, "unregistered") == first
    assert run(copy, "package") == first
    names = {p.name.split(".")[1] for p in (copy / "generated" / "__pycache__").glob("*.nbi")}
    assert {"generated_dense_sigmoid_numba", "other_dense_sigmoid_numba"} <= names


def test_no_writable_cache_folder(copy):
    """Where Numba finds no cache folder (a read-only install and home), the module
    compiles in memory instead of failing at import."""
    patch = textwrap.dedent(
        """
        import numba.core.caching as caching
        caching.CacheImpl._locator_classes = []
        """
    )
    (copy / "sitecustomize.py").write_text(patch)
    first = run(copy, "package")
    assert not list((copy / "generated").glob("__pycache__/*.nbi"))
    (copy / "sitecustomize.py").unlink()
    assert run(copy, "package") == first


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_install(copy, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    for path in [copy / "generated", *(copy / "generated").iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    home.chmod(0o555)
    try:
        assert run(copy, "package", env={"HOME": str(home), "XDG_CACHE_HOME": str(home)})
    finally:
        (copy / "generated").chmod(0o755)
        home.chmod(0o755)


def test_after_the_spec_changed(copy):
    """A module regenerated in place (its text changed) recompiles instead of loading
    the old code."""
    before = run(copy, "package", "dense_tanh_numba")
    path = copy / "generated" / "dense_tanh_numba.py"
    text = path.read_text()
    assert text.count("_tanh(") >= 2
    # the same module with tanh replaced by the identity in its forward kernel
    kernel = text.index("def _forward_kernel")
    path.write_text(text[:kernel] + text[kernel:].replace("_tanh(", "(", 1))
    after = run(copy, "package", "dense_tanh_numba")
    assert after != before


def test_several_processes_at_once(copy):
    procs = [
        subprocess.Popen(
            [sys.executable, "run.py", "package", "grn_numba"],
            cwd=copy,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(copy)},
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.splitlines()[-1]))
    assert results[0] == results[1] == results[2]
    assert run(copy, "package", "grn_numba") == results[0]
