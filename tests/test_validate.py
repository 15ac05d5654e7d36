"""Translation validation (symbolic/validate.py, symbolic/evaluate.py).

- The reference interpreter agrees with the hand-written NumPy models of the paper (a
  second implementation, written without the generator).
- Each check can fail: a module mutated in its forward, a gradient, dx, dstate0, its
  purity, its aliasing or its NaN handling is caught, and the finding names the value.
- ``derivgen generate`` validates by default: a deliberately broken template is caught
  before anything is written (exit status 3); a spec whose values are nowhere finite is
  refused (exit status 2) unless ``--no-validate``; a worker that dies is reported.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from symbolic import backends, evaluate, parse, validate
from symbolic.backends.base import templates_root
from symbolic.bench import reference
from symbolic.generate import builtin_specs, format_code
from symbolic.generate import render_model as render

SPECS = {p.stem: p for p in builtin_specs()}
BUILTIN_BACKENDS = tuple(backends.BUILTIN)


def cli(*args: str) -> int:
    from symbolic.cli import main

    return main(list(args))


def test_interpreter_equals_the_hand_written_grn():
    model = parse.load(SPECS["grn"])
    rng = np.random.default_rng(0)
    params = {
        k: rng.standard_normal(s)
        for k, s in {"WXu": (5, 3), "WXc": (5, 3), "WTu": (5,), "WTc": (5,), "Bu": (5,),
                     "Bc": (5,)}.items()
    }  # fmt: skip
    x = rng.standard_normal((4, 2, 3))
    h0 = rng.standard_normal((2, 5))
    a, final = evaluate.forward(model, params, x, {"h": h0})
    want, _ = reference.grn_forward(params, x, h0)
    np.testing.assert_allclose(a, want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(final["h"], want[-1], rtol=1e-13)


def test_interpreter_equals_the_hand_written_mlp_layer_and_cost():
    layer = parse.load(SPECS["dense_sigmoid"])
    cost = parse.load(SPECS["squared_error"])
    rng = np.random.default_rng(1)
    params = {"W": rng.standard_normal((4, 3)), "B": rng.standard_normal(4)}
    x = rng.standard_normal((5, 3))
    a, _ = evaluate.forward(layer, params, x)
    want, _ = reference.mlp_forward([params], x)
    np.testing.assert_allclose(a, want, rtol=1e-14)
    y = rng.uniform(size=a.shape)
    assert evaluate.cost(cost, a, y) == pytest.approx(reference.squared_error(a, y)[0], 1e-14)


# --- the shipped modules ----------------------------------------------------------------


@pytest.mark.parametrize("spec", sorted(SPECS), ids=str)
def test_every_shipped_module_passes_validation_as_users_import_it(spec):
    """Each module in ``generated/`` (what ``derivgen generate`` writes: the golden test
    holds it to that), imported as ``generated.<name>`` the way a user's script imports
    it, passes every check ``derivgen generate`` runs, the other backends agreeing with
    NumPy's. (Imported under its own name, a Numba module reuses the compiled code the
    other tests of the suite cache.)"""
    import importlib

    model = parse.load(SPECS[spec])
    results = {}
    for backend in BUILTIN_BACKENDS:
        if backends.get(backend).missing():
            continue
        label = f"{model.name}_{backend}.py"
        module = validate._adapted(
            backend, importlib.import_module(f"generated.{model.name}_{backend}")
        )
        results[backend] = validate.check(model, module, label)
        if backend != "numpy":
            validate.check_agreement(model, label, results[backend], results["numpy"])
    assert "numpy" in results and len(results) > 1


# --- every check can fail -------------------------------------------------------------


def _module_text(name: str, backend: str = "numpy") -> tuple[object, str]:
    model = parse.load(SPECS[name])
    module = render(model, backend)
    return model, format_code(module.text, module.filename)


def _check_text(model, text: str, tmp_path: Path, filename: str):
    path = validate.stage(text, filename, tmp_path)
    return validate.check(model, validate.load(path), filename)


MUTATIONS = [
    # (what is edited, the old text, the new text, the value the finding names)
    ("forward", "np.add(a, h, out=a)\n", "np.add(a, h, out=a)\n        a *= 1.0000001\n",
     "the output 'a'"),
    ("a gradient", 'grads["Bc"] = _dP_sum[_n_out:]', 'grads["Bc"] = 1.001 * _dP_sum[_n_out:]',
     "the gradient of 'Bc'"),
    ("dx", "_dx = _dP2 @ _W_in", "_dx = 0.999 * (_dP2 @ _W_in)", "dx"),
    ("dstate0", '"h": dh_next,', '"h": dh_next * 1.01,', "dstate0['h']"),
    ("the returned output", "return _h_all[1:].copy(), cache", "return _h_all[1:], cache",
     "the output 'a'"),
    ("NaN handling", "return _h_all[1:].copy(), cache",
     "return np.nan_to_num(_h_all[1:]), cache", "the output 'a' (NaN in x and a parameter)"),
    ("purity", "    return grads, dx, dstate0", "    _dout[0, 0, 0] += 1.0\n    return grads, dx, dstate0",
     "the argument da"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "old", "new", "value"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_check_catches_its_mutation(what, old, new, value, tmp_path):
    model, text = _module_text("grn")
    assert old in text, f"the mutation's anchor is gone from grn_numpy: {old!r}"
    with pytest.raises(validate.Mismatch) as info:
        _check_text(model, text.replace(old, new, 1), tmp_path, "grn_numpy.py")
    assert info.value.value == value, str(info.value)
    assert info.value.spec == str(model.path) and info.value.module == "grn_numpy.py"
    assert str(info.value).startswith(f"{model.path}: grn_numpy.py: {value} is wrong")


def test_the_unmutated_module_passes(tmp_path):
    model, text = _module_text("grn")
    _check_text(model, text, tmp_path, "grn_numpy.py")


def test_a_numba_module_that_disagrees_with_numpy_is_caught(tmp_path):
    """Both modules right by themselves is not enough: the agreement check compares
    them (here a NumPy module off by 1e-8, under the finite-difference tolerance but not
    the agreement's)."""
    model, numpy_text = _module_text("dense_tanh")
    _, numba_text = _module_text("dense_tanh", "numba")
    mine = _check_text(model, numba_text, tmp_path, "dense_tanh_numba.py")
    off = numpy_text.replace("return grads, dx", 'grads["B"] = grads["B"] * (1 + 1e-8)\n'
                             "    return grads, dx")  # fmt: skip
    theirs = _check_text(model, off, tmp_path, "dense_tanh_numpy.py")
    with pytest.raises(validate.Mismatch, match="the gradient of 'B', against the NumPy"):
        validate.check_agreement(model, "dense_tanh_numba.py", mine, theirs)


# --- derivgen generate ------------------------------------------------------------------


@pytest.fixture
def broken_templates(tmp_path, monkeypatch):
    """A copy of the templates in which the NumPy recurrent forward adds the state where
    it should subtract it (a template bug)."""
    copy = tmp_path / "templates"
    shutil.copytree(templates_root(), copy)
    template = copy / "numpy" / "recurrent.py.j2"
    text = template.read_text()
    anchor = "{% for line in step %}\n        {{ line }}\n{% endfor %}\n"
    assert anchor in text
    template.write_text(
        text.replace(
            anchor, anchor + "{% for s in states %}\n        {{ s.name }} += 1e-6\n{% endfor %}\n"
        )  # fmt: skip
    )
    numpy = dataclasses.replace(backends.get("numpy"), templates=copy / "numpy")
    monkeypatch.setitem(backends._registered, "numpy", numpy)
    return copy


def test_a_broken_template_is_caught_and_nothing_is_written(broken_templates, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grn_numpy.py").write_text("# the previous module\n")
    code = cli("generate", "--backend", "numpy", "--out", str(out), str(SPECS["grn"]))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "derivgen bug" in err and "grn_numpy.py" in err and "grn.toml" in err
    assert "is wrong by" in err
    assert sorted(p.name for p in out.iterdir()) == ["grn_numpy.py"]
    assert (out / "grn_numpy.py").read_text() == "# the previous module\n"


def test_no_validate_writes_what_validation_would_refuse(broken_templates, tmp_path):
    out = tmp_path / "out"
    code = cli("generate", "--no-validate", "--backend", "numpy", "--out", str(out),
               str(SPECS["grn"]))  # fmt: skip
    assert code == 0 and (out / "grn_numpy.py").exists()


# --- remembered verdicts ------------------------------------------------------------------


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A private cache folder, and the specs each validation run was given."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ran: list[list[str]] = []
    real = validate.run

    def counting(jobs, **options):
        ran.append(sorted(Path(job.spec).name for job in jobs))
        return real(jobs, **options)

    monkeypatch.setattr(validate, "run", counting)
    return ran


def test_modules_that_passed_are_not_validated_again_until_something_changes(
    counted, tmp_path, monkeypatch
):
    from symbolic import generate as gen

    built = gen.build_models([SPECS["grn"], SPECS["dense_tanh"]], ["numpy"])
    both = ["dense_tanh.toml", "grn.toml"]
    gen.validate_modules(built, progress=False)
    gen.validate_modules(built, progress=False)
    assert counted == [both, []]
    gen.validate_modules(built, progress=False, revalidate=True)
    assert counted[-1] == both
    # a module's text changed
    (model, module), rest = built[0], built[1:]
    edited = gen.Module(module.filename, module.text + "# edited\n")
    gen.validate_modules([(model, edited), *rest], progress=False)
    assert counted[-1] == [Path(model.path).name]
    # the spec's text changed (a comment: the same modules)
    spec = tmp_path / "grn.toml"
    spec.write_text(SPECS["grn"].read_text() + "# a comment\n")
    gen.validate_modules(gen.build_models([spec], ["numpy"]), progress=False)
    assert counted[-1] == ["grn.toml"]
    # derivgen's code, a library or the machine changed
    monkeypatch.setattr(validate, "_fingerprint", lambda: "another derivgen")
    gen.validate_modules(built, progress=False)
    assert counted[-1] == both


def test_the_fingerprint_holds_the_code_and_the_libraries():
    fingerprint = validate._fingerprint()
    assert "validate.py " in fingerprint and "generate.py " in fingerprint
    assert f"numpy {np.__version__}" in fingerprint


def test_a_module_that_failed_is_validated_again(broken_templates, counted, tmp_path, capsys):
    out = tmp_path / "out"
    for _ in range(2):
        code = cli("generate", "--backend", "numpy", "--out", str(out), str(SPECS["grn"]))
        assert code == 3 and "is wrong by" in capsys.readouterr().err
    assert counted == [["grn.toml"], ["grn.toml"]]


def test_the_cli_says_what_it_did_not_validate_again(counted, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", "--backend", "numpy", "--out", str(out), str(SPECS["grn"])]
    assert cli(*args) == 0
    capsys.readouterr()
    assert cli(*args) == 0
    err = capsys.readouterr().err
    assert "1 module(s) unchanged since they passed" in err
    assert "--revalidate" in err
    assert cli(*args, "--revalidate") == 0
    assert counted == [["grn.toml"], [], ["grn.toml"]]


def test_without_a_writable_cache_everything_is_validated_every_time(tmp_path, monkeypatch):
    from symbolic import generate as gen

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    ran = []
    real = validate.run
    monkeypatch.setattr(validate, "run", lambda jobs, **o: ran.append(len(jobs)) or real(jobs, **o))
    built = gen.build_models([SPECS["dense_tanh"]], ["numpy"])
    gen.validate_modules(built, progress=False)
    gen.validate_modules(built, progress=False)
    assert ran == [1, 1]


NOWHERE_FINITE = """\
name = "log_of_a_product"
kind = "feedforward"
input = "x"
output = "a"
[params]
W = "matrix"
[equations]
a = "log(W@x) + log(-(W@x))"
"""


def test_a_spec_nowhere_finite_is_refused(tmp_path, capsys):
    spec = tmp_path / "log_of_a_product.toml"
    spec.write_text(NOWHERE_FINITE)
    out = tmp_path / "out"
    assert cli("generate", "--backend", "numpy", "--out", str(out), str(spec)) == 2
    err = capsys.readouterr().err
    assert "cannot validate" in err and str(spec) in err and "--no-validate" in err
    assert not out.exists() or not any(out.iterdir())


def test_a_worker_that_dies_is_reported_and_the_rest_still_validated(tmp_path):
    """A module that kills the validating process is blamed; the jobs the process had not
    reached are validated by a fresh one."""
    path = tmp_path / "crash_numpy.py"
    path.write_text("import os\nos._exit(7)\n")
    model, text = _module_text("dense_tanh")
    good = validate.stage(text, "dense_tanh_numpy.py", tmp_path)
    jobs = [
        validate.Job("crash.toml", model.text, [("numpy", str(path))]),
        validate.Job("good.toml", model.text, [("numpy", str(good))]),
    ]
    verdicts = {v.spec: v for v in validate.run(jobs, workers=1, progress=False)}
    assert verdicts["crash.toml"].status == "bug"
    assert verdicts["crash.toml"].module == "crash_numpy.py"
    assert "died (exit status 7)" in verdicts["crash.toml"].message
    assert verdicts["good.toml"].status == "ok"


def _pid_modules(tmp_path, count):
    """Jobs whose module records the validating process's id when it is loaded."""
    log = tmp_path / "pids"
    model, _ = _module_text("dense_tanh")
    jobs = []
    for index in range(count):
        path = tmp_path / f"m{index}" / "pid_numpy.py"
        path.parent.mkdir()
        path.write_text(
            f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
        )
        jobs.append(validate.Job(f"spec{index}.toml", model.text, [("numpy", str(path))]))
    return jobs, log


def test_jobs_are_handed_out_one_at_a_time_to_every_worker(tmp_path):
    """Two jobs and two workers: each runs in its own process at once (a worker never
    holds a job the other could be running)."""
    jobs, log = _pid_modules(tmp_path, 2)
    verdicts = validate.run(jobs, workers=2, progress=False)
    assert sorted(v.spec for v in verdicts) == ["spec0.toml", "spec1.toml"]
    assert len(set(log.read_text().split())) == 2


def test_a_worker_gives_way_to_a_fresh_one_after_chunk_jobs(tmp_path, monkeypatch):
    jobs, log = _pid_modules(tmp_path, 5)
    monkeypatch.setattr(validate, "CHUNK", 2)
    verdicts = validate.run(jobs, workers=1, progress=False)
    assert len(verdicts) == 5
    pids = log.read_text().split()
    assert len(pids) == 5 and len(set(pids)) == 3  # 2 + 2 + 1
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_fewer_specs_than_workers_are_split_by_module_and_each_finding_told_once(
    tmp_path, monkeypatch
):
    """One spec, two workers: its modules run in parallel, each beside NumPy's; the
    NumPy module's finding is told once, however many pieces ran it. (The runs are
    recorded, not run: what a worker finds is the other tests' subject.)"""
    from symbolic import generate as gen

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(validate, "default_workers", lambda: 2)
    given, wrong = [], set()

    def run(jobs, **options):
        given.append(jobs)
        return [
            validate.Verdict(
                job.spec, Path(path).name, "bug", f"{job.spec}: {Path(path).name}: wrong"
            )
            if Path(path).name in wrong
            else validate.Verdict(job.spec, Path(path).name, "ok")
            for job in jobs
            for _, path in job.modules
        ]

    monkeypatch.setattr(validate, "run", run)
    built = gen.build_models([SPECS["dense_tanh"]], ["numpy", "numba", "jax"])
    gen.validate_modules(built, progress=False)
    assert [[b for b, _ in job.modules] for job in given[-1]] == [
        ["numpy", "numba"],
        ["numpy", "jax"],
    ]
    two = gen.build_models([SPECS["dense_tanh"], SPECS["dense_sigmoid"]], ["numpy", "numba"])
    gen.validate_modules(two, progress=False)  # dense_tanh's pieces are remembered
    assert [Path(job.spec).name for job in given[-1]] == ["dense_sigmoid.toml"]
    gen.validate_modules(two, progress=False, revalidate=True)
    assert [len(job.modules) for job in given[-1]] == [2, 2]  # whole
    wrong.add("grn_numpy.py")
    grn = gen.build_models([SPECS["grn"]], ["numpy", "numba", "jax"])
    with pytest.raises(gen.GeneratorBug) as info:
        gen.validate_modules(grn, progress=False)
    assert len(given[-1]) == 2
    assert str(info.value).count("grn_numpy.py: wrong") == 1
    wrong.clear()
    gen.validate_modules(grn, progress=False)  # nothing of the failed spec was remembered
    assert len(given[-1]) == 2


def test_a_module_without_a_verdict_is_not_remembered(tmp_path, monkeypatch):
    """Only modules that said ok are remembered: a run that returned no verdict for one
    (it never got to it) leaves its spec to validate again."""
    from symbolic import generate as gen

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    given = []

    def run(jobs, **options):
        given.append(jobs)
        return [
            validate.Verdict(job.spec, Path(path).name, "ok")
            for job in jobs
            for backend, path in job.modules
            if backend == "numpy"  # the others' verdicts are missing
        ]

    monkeypatch.setattr(validate, "run", run)
    built = gen.build_models([SPECS["dense_tanh"]], ["numpy", "numba"])
    gen.validate_modules(built, progress=False)
    gen.validate_modules(built, progress=False)
    assert len(given) == 2 and all(len(jobs) == 1 for jobs in given)
