"""Writing the modules (symbolic/generate.py, ``derivgen generate``).

- golden: ``generated/`` is byte for byte what a fresh generation gives;
- deterministic across processes with different ``PYTHONHASHSEED``;
- atomic: a bad spec, or a failure while swapping files in, leaves every existing file
  as it was and no temporary file behind;
- ``--check`` changes nothing, exits 1 naming every stale, hand-edited or missing
  module, and 0 on a fresh output folder;
- ``--out`` writes elsewhere and leaves ``generated/`` alone;
- the generated modules pass ``ruff check`` and ``ruff format --check``.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symbolic import generate as gen
from symbolic import parse, write
from symbolic.backends import BUILTIN

ROOT = Path(__file__).resolve().parent.parent
GENERATED = gen.default_out()
SPECS = gen.builtin_specs()
KIND_OF = {path: parse.load(path).kind for path in SPECS}


#: The built-in backends: every built-in spec is generated for each.
BACKENDS = list(BUILTIN)


_REAL_BUILD_MODELS = gen.build_models
_BUILT: dict[tuple, list] = {}


def cached_build_models(specs, backends):
    """``generate.build_models`` memoized: the checks below exercise comparing and
    writing, and rendering every module again for each of them would only cost time
    (rendering is what the golden test checks)."""
    key = (tuple(str(s) for s in specs), tuple(backends))
    if key not in _BUILT:
        _BUILT[key] = _REAL_BUILD_MODELS(specs, backends)
    return _BUILT[key]


def cached_build(specs, backends):
    return [module for _, module in cached_build_models(specs, backends)]


def expected_files() -> dict[str, str]:
    """What a fresh generation of the built-in specs writes: file name -> text."""
    files = {m.filename: m.text for m in cached_build(SPECS, BACKENDS)}
    files["__init__.py"] = gen.INIT_TEXT
    return files


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``folder`` (hidden ones too): name -> (bytes, mtime_ns)."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def cli(*args: str) -> int:
    from symbolic.cli import main

    return main(list(args))


@pytest.fixture(scope="module")
def fresh() -> dict[str, str]:
    return expected_files()


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory, fresh) -> Path:
    """A folder generated once for this module; copy it before changing anything."""
    out = tmp_path_factory.mktemp("fresh")
    write.write_files(out, fresh)
    return out


@pytest.fixture
def fast_build(monkeypatch):
    monkeypatch.setattr(gen, "build_models", cached_build_models)


@pytest.fixture
def out_dir(tmp_path, fresh_dir) -> Path:
    out = tmp_path / "out"
    shutil.copytree(fresh_dir, out)
    return out


# ---------------------------------------------------------------------------------------
# Golden
# ---------------------------------------------------------------------------------------


def test_generated_is_a_fresh_generation_byte_for_byte(fresh, request):
    problems = []
    for name, text in fresh.items():
        path = GENERATED / name
        current = path.read_bytes() if path.exists() else b""
        if current == text.encode("utf-8"):
            continue
        diff = "".join(
            difflib.unified_diff(
                current.decode("utf-8", "replace").splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"generated/{name} (committed)",
                tofile=f"generated/{name} (fresh)",
            )
        )
        problems.append(diff or f"generated/{name}: differs (bytes)")
    for path in sorted(GENERATED.glob("*.py")):
        if path.name not in fresh:
            problems.append(f"generated/{path.name}: orphan, no built-in spec generates it")
    if problems and request.config.getoption("--update-golden"):
        gen.generate(None, BACKENDS)
        pytest.skip("generated/ was regenerated (--update-golden): review and commit it")
    assert not problems, (
        "generated/ is not what the specs produce: rerun `derivgen generate` "
        "(or pytest --update-golden)\n" + "\n".join(problems)
    )


def test_generated_folder_holds_a_module_per_spec_and_backend(fresh):
    assert "__init__.py" in fresh
    for spec in SPECS:
        for backend in BACKENDS:
            assert f"{spec.stem}_{backend}.py" in fresh


# ---------------------------------------------------------------------------------------
# Determinism across processes
# ---------------------------------------------------------------------------------------


def _generate_in_subprocess(seed: str, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    # the bytes written are the question here, not the numbers (validated elsewhere)
    argv = [sys.executable, "-m", "symbolic.cli", "generate", "--no-validate", "--out", str(out)]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_output_is_identical_under_different_hash_seeds(tmp_path, fresh):
    outs = {seed: tmp_path / f"seed{seed}" for seed in ("1", "4242")}
    procs = {seed: _generate_in_subprocess(seed, out) for seed, out in outs.items()}
    for seed, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"PYTHONHASHSEED={seed}: {stderr.decode()[-2000:]}"
    first, second = (snapshot(out) for out in outs.values())
    assert sorted(first) == sorted(second) == sorted(fresh)
    for name in first:
        assert first[name][0] == second[name][0], f"{name} depends on PYTHONHASHSEED"
        assert first[name][0] == fresh[name].encode(), f"{name} differs from this process's"


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------

BAD_SPEC = """
name = "broken"
kind = "feedforward"
input = "x"
output = "a"

[params]
W = "matrix"

[equations]
a = "sigmoid(W@x) + nowhere"
"""


def _old_contents(out: Path, names) -> None:
    """Put distinct old contents in place, so that any overwrite would show."""
    for name in names:
        (out / name).write_text(f"# old {name}\n", encoding="utf-8")


def test_a_bad_spec_among_several_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _old_contents(out, ["dense_linear_numpy.py", "grn_numpy.py", "__init__.py"])
    bad = tmp_path / "broken.toml"
    bad.write_text(BAD_SPEC)
    by_stem = {p.stem: p for p in SPECS}
    specs = [by_stem["dense_linear"], bad, by_stem["grn"]]
    before = snapshot(out)
    with pytest.raises(parse.SpecError) as info:
        gen.generate(specs, ["numpy"], out, validate=False)
    assert "broken.toml" in str(info.value) and "nowhere" in str(info.value)
    assert snapshot(out) == before


def test_cli_bad_spec_exits_2_names_it_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    _old_contents(out, ["dense_linear_numpy.py"])
    bad = tmp_path / "broken.toml"
    bad.write_text(BAD_SPEC)
    good = next(p for p in SPECS if p.stem == "dense_linear")
    before = snapshot(out)
    assert cli("generate", "--backend", "numpy", "--out", str(out), str(good), str(bad)) == 2
    assert "broken.toml" in capsys.readouterr().err
    assert snapshot(out) == before


def _flaky_replace(monkeypatch, fail_on: str, stage: str):
    """Make the swap fail once: when keeping ``fail_on``'s old contents (stage "backup",
    a hard link) or when moving its staged copy into place (stage "install")."""
    real_replace, real_link = os.replace, os.link
    state = {"failed": False}

    def fail():
        state["failed"] = True
        raise OSError(28, "No space left on device (injected)")

    def replace(src, dst):
        src, dst = Path(src), Path(dst)
        if not state["failed"] and stage == "install":
            if dst.name == fail_on and src.name.endswith(".tmp"):
                fail()
        return real_replace(src, dst)

    def link(src, dst):
        if not state["failed"] and stage == "backup" and Path(src).name == fail_on:
            fail()
        return real_link(src, dst)

    monkeypatch.setattr(write.os, "replace", replace)
    monkeypatch.setattr(write.os, "link", link)
    return state


@pytest.mark.parametrize("stage", ["backup", "install"])
@pytest.mark.parametrize("position", [1, -1], ids=["second-file", "last-file"])
def test_a_failure_while_swapping_files_in_restores_every_file(
    tmp_path, monkeypatch, stage, position
):
    out = tmp_path / "out"
    out.mkdir()
    specs = [p for p in SPECS if p.stem in ("dense_linear", "dense_sigmoid", "grn")]
    order = [f"{p.stem}_numpy.py" for p in specs] + ["__init__.py"]
    # every file but one exists already (that one is new: rollback must remove it)
    _old_contents(out, [n for n in order if n != "dense_sigmoid_numpy.py"])
    (out / "unrelated.txt").write_text("keep me\n")
    fail_on = order[position]
    if stage == "backup" and fail_on == "dense_sigmoid_numpy.py":
        fail_on = order[0]
    before = snapshot(out)
    state = _flaky_replace(monkeypatch, fail_on, stage)
    with pytest.raises(OSError, match="injected"):
        gen.generate(specs, ["numpy"], out, validate=False)
    assert state["failed"], "the injected failure never happened"
    monkeypatch.undo()
    after = snapshot(out)
    assert sorted(after) == sorted(before), "files were left behind or lost"
    for name, (data, _) in before.items():
        assert after[name][0] == data, f"{name} was not restored"


def test_a_failure_while_staging_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _old_contents(out, ["dense_linear_numpy.py", "__init__.py"])
    before = snapshot(out)
    real = write.tempfile.mkstemp
    calls = []

    def mkstemp(*args, **kwargs):
        calls.append(kwargs.get("prefix"))
        if len(calls) == 2:
            raise OSError(28, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(write.tempfile, "mkstemp", mkstemp)
    specs = [p for p in SPECS if p.stem in ("dense_linear", "grn")]
    with pytest.raises(OSError, match="injected"):
        gen.generate(specs, ["numpy"], out, validate=False)
    monkeypatch.undo()
    assert snapshot(out) == before


def test_a_successful_generation_leaves_no_temporary_file(fresh_dir, fresh):
    assert sorted(p.name for p in fresh_dir.iterdir()) == sorted(fresh)


# ---------------------------------------------------------------------------------------
# --check
# ---------------------------------------------------------------------------------------


def test_check_on_a_fresh_folder_finds_nothing(fresh_dir, fast_build):
    before = snapshot(fresh_dir)
    written, problems = gen.generate(None, BACKENDS, fresh_dir, check_only=True)
    assert written == [] and problems == []
    assert snapshot(fresh_dir) == before


def _spoil(out: Path) -> dict[str, str]:
    """Make one module stale, hand-edit another, delete a third: name -> expected word."""
    grn = out / "grn_numpy.py"
    text = grn.read_text()
    old = text.splitlines()[1].removeprefix("# spec sha256: ")
    grn.write_text(text.replace(old, "0" * 64))  # as if made from another spec version
    dense = out / "dense_sigmoid_numpy.py"
    dense.write_text(dense.read_text().replace("return grads, dx", "return grads, dx  # tweak"))
    (out / "dense_linear_numpy.py").unlink()
    return {
        "grn_numpy.py": "stale",
        "dense_sigmoid_numpy.py": "hand-edited",
        "dense_linear_numpy.py": "missing",
    }


def test_check_names_every_stale_hand_edited_or_missing_module(out_dir, fast_build):
    spoiled = _spoil(out_dir)
    before = snapshot(out_dir)
    written, problems = gen.generate(None, BACKENDS, out_dir, check_only=True)
    assert written == []
    found = {p.path.name: p.reason for p in problems}
    assert set(found) == set(spoiled)
    for name, word in spoiled.items():
        assert word in found[name], f"{name}: {found[name]!r}"
    assert snapshot(out_dir) == before  # --check changes nothing


def test_check_names_an_orphan_module(out_dir, fast_build):
    (out_dir / "gone_numpy.py").write_text("# a module whose spec was deleted\n")
    _, problems = gen.generate(None, BACKENDS, out_dir, check_only=True)
    assert [p.path.name for p in problems] == ["gone_numpy.py"]
    assert "orphan" in problems[0].reason


def test_cli_check_exits_0_on_a_fresh_folder(fresh_dir, capsys, fast_build):
    before = snapshot(fresh_dir)
    assert cli("generate", "--check", "--out", str(fresh_dir)) == 0
    assert "current" in capsys.readouterr().out
    assert snapshot(fresh_dir) == before


def test_cli_check_exits_1_and_names_every_spoiled_module(out_dir, capsys, fast_build):
    spoiled = _spoil(out_dir)
    before = snapshot(out_dir)
    assert cli("generate", "--check", "--out", str(out_dir)) == 1
    printed = capsys.readouterr().out
    for name, word in spoiled.items():
        line = next((ln for ln in printed.splitlines() if name in ln), None)
        assert line is not None, f"{name} not named in:\n{printed}"
        assert word in line
    assert snapshot(out_dir) == before


def test_check_finds_a_module_whose_spec_changed(tmp_path):
    """The real stale case: the spec is edited after generation."""
    spec = tmp_path / "dense_linear.toml"
    shutil.copy(next(p for p in SPECS if p.stem == "dense_linear"), spec)
    out = tmp_path / "out"
    gen.generate([spec], ["numpy"], out)
    assert gen.generate([spec], ["numpy"], out, check_only=True)[1] == []
    spec.write_text(spec.read_text().replace('a = "W@x + B"', 'a = "W@x + 2*B"'))
    _, problems = gen.generate([spec], ["numpy"], out, check_only=True)
    assert [(p.path.name, "stale" in p.reason) for p in problems] == [
        ("dense_linear_numpy.py", True)
    ]


# ---------------------------------------------------------------------------------------
# --out
# ---------------------------------------------------------------------------------------


def test_out_writes_elsewhere_and_leaves_generated_alone(tmp_path, fresh):
    before = snapshot(GENERATED)
    out = tmp_path / "elsewhere" / "nested"
    # without validating: test_validate.py validates every shipped module as imported
    assert cli("generate", "--no-validate", "--out", str(out)) == 0
    assert snapshot(GENERATED) == before
    assert {p.name: p.read_text() for p in out.iterdir()} == fresh


def test_backend_option_writes_only_that_backend(tmp_path, fast_build):
    out = tmp_path / "out"
    assert cli("generate", "--backend", "numpy", "--out", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{p.stem}_numpy.py" for p in SPECS] + ["__init__.py"])


# ---------------------------------------------------------------------------------------
# ruff
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["check"], ["format", "--check", "--diff"]], ids=["check", "format"]
)
def test_generated_modules_pass_ruff(command):
    files = sorted(str(p) for p in GENERATED.glob("*.py"))
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *files],
        cwd=ROOT,  # the project's ruff configuration (pyproject.toml)
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_modules_are_formatted_in_one_run_as_each_alone():
    """``format_all`` formats many modules in one ruff process: each comes out as
    ``ruff format`` makes it alone (on standard input), in order, names kept, even two
    modules of one name."""
    texts = ["x=( 1,2 )\n", "def f( a ):\n  return a\n", "y = [1,\n2]\n", "z=1\n"]
    modules = [
        gen.Module(name, text)
        for name, text in zip(["a.py", "b.py", "a.py", "c.py"], texts, strict=True)
    ]
    alone = []
    for module in modules:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ruff",
                "format",
                "--isolated",
                "--line-length",
                str(gen.LINE_LENGTH),
                "--stdin-filename",
                module.filename,
                "-",
            ],
            input=module.text,
            capture_output=True,
            text=True,
            check=True,
        )
        alone.append(result.stdout)
    formatted = gen.format_all(modules)
    assert [m.filename for m in formatted] == [m.filename for m in modules]
    assert [m.text for m in formatted] == alone
    assert alone[0] == "x = (1, 2)\n"
    assert gen.format_all([]) == []


def test_a_module_ruff_cannot_format_is_a_generator_bug_named_alone():
    modules = [gen.Module("good.py", "x = 1\n"), gen.Module("bad.py", "def (:\n")]
    with pytest.raises(gen.GeneratorBug) as info:
        gen.format_all(modules)
    message = str(info.value)
    assert message.startswith("ruff could not format bad.py (a template bug)")
    assert "bad.py:1:" in message and "good.py" not in message
    assert "derivgen-format-" not in message  # no temporary path


def test_the_shared_template_environment_compiles_once_and_reloads_an_edited_file(tmp_path):
    """One Jinja environment per template folder and process (each template compiled
    once), which still sees a template edited since: an engineer's edit is never
    hidden by the process's cache."""
    from symbolic import render
    from symbolic.backends import get

    numpy = get("numpy")
    assert render.environment(numpy) is render.environment(numpy)
    assert render.new_environment(numpy) is not render.environment(numpy)
    shared = tmp_path / "shared"
    shared.mkdir()
    template = tmp_path / "cell.py.j2"
    template.write_text("x = {{ value }}\n")
    env = render._shared_environment(str(tmp_path), str(shared))
    first = env.get_template("cell.py.j2")
    assert first.render(value=1) == "x = 1\n"
    assert env.get_template("cell.py.j2") is first  # compiled once
    template.write_text("y = {{ value }}\n")
    later = template.stat().st_mtime + 5
    os.utime(template, (later, later))
    assert render._shared_environment(str(tmp_path), str(shared)) is env
    assert env.get_template("cell.py.j2").render(value=2) == "y = 2\n"
