"""A user's spec file as a layer or a cost of a run (``--cell PATH.toml``, ``--spec``):
generated on the fly into a cache, validated as ``derivgen generate`` validates, imported.

A spec named by a path (it ends in ``.toml`` or holds a ``/``) goes through the pipeline of
:func:`symbolic.generate.generate`, validation included, into
``<cache>/train/<name>-<sha256 of the spec, 16 digits>/`` (the cache is
:func:`symbolic.validate.cache_root`: ``$XDG_CACHE_HOME/derivgen`` or
``~/.cache/derivgen``). A module already there is used as it is once
``generate --check`` finds it current (same spec, same generator), so an unchanged spec is
generated and validated once. The module is imported under a private name from its file:
nothing is written into the package, and the package's own modules are untouched.

A bad spec raises :class:`~symbolic.parse.SpecError` (the CLI's exit status 2), a
module that fails validation :class:`~symbolic.generate.GeneratorBug` (status 3).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # the pipeline (SymPy) is imported only when a spec file is used
    from symbolic.model import Cell, Cost


def is_path(spec: str) -> bool:
    """Whether ``spec`` names a spec file (``x.toml``, ``dir/x``) rather than a built-in
    spec."""
    return spec.endswith(".toml") or "/" in spec or "\\" in spec


def canonical(spec: str) -> str:
    """A spec file's absolute path (so that a run resumes from any folder); a built-in
    spec's name unchanged."""
    return str(Path(spec).expanduser().resolve()) if is_path(spec) else spec


def read(path: str) -> Cell | Cost:
    """The checked model of the spec file ``path`` (raises :class:`SpecError`)."""
    from symbolic import parse

    return parse.load(Path(path))


def cache_folder(model: Cell | Cost) -> Path:
    """Where the modules of ``model`` are generated: named by its name and digest."""
    from symbolic import validate

    return validate.cache_root() / "train" / f"{model.name}-{model.sha256[:16]}"


def load(path: str, backend: str, stream: IO[str] | None = None) -> ModuleType:
    """The ``backend`` module of the spec file ``path``, generated (and validated) into
    the cache unless it is there and current, then imported.

    Args:
        path: The spec file.
        backend: The backend of the module (its NumPy module is generated too: the
            other backends are validated against it).
        stream: Where to say that the spec is being generated (default stderr).

    Raises:
        SpecError: The spec is bad (file, line, symbol).
        GeneratorBug: A module failed validation.
    """
    from symbolic import generate

    model = read(path)
    folder = cache_folder(model)
    backends = ["numpy"] if backend == "numpy" else ["numpy", backend]
    stale = True
    if folder.is_dir():
        _, problems = generate.generate(
            [model.path], backends, folder, check_only=True, progress=False
        )
        stale = bool(problems)
    if stale:
        print(
            f"generating {model.path} ({', '.join(backends)}), validated, into {folder}",
            file=sys.stderr if stream is None else stream,
        )
        generate.generate([model.path], backends, folder, progress=False)
    return _import(folder / f"{model.name}_{backend}.py", model)


def _import(file: Path, model: Cell | Cost) -> ModuleType:
    """The module ``file`` under a private name (one per spec digest and backend)."""
    name = f"_derivgen_spec_{file.stem}_{model.sha256[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
