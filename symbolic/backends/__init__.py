"""The backends (pipeline stage 4, ``plan``): one package each, and the registry that names them.

Every list of backends in derivgen (the CLI's choices, validation, training, the
benchmark) reads :func:`names`. A backend is a package ``symbolic.backends.<name>`` whose
``BACKEND`` is a :class:`~symbolic.backends.base.Backend`: adding one is one folder here,
one folder of templates, and one line in :data:`BUILTIN`. A backend defined elsewhere (a
plug-in, a test) joins with :func:`register`.
"""

from __future__ import annotations

import importlib

from symbolic.backends.base import Backend, UnsupportedSpec

#: The built-in backends, in the order they are generated: name -> package.
BUILTIN = {
    "numpy": "symbolic.backends.numpy",
    "numba": "symbolic.backends.numba",
    "torch": "symbolic.backends.torch",
}

_registered: dict[str, Backend] = {}


def names() -> tuple[str, ...]:
    """Every backend's name: the built-in ones first, then those registered."""
    return tuple(BUILTIN) + tuple(n for n in _registered if n not in BUILTIN)


def get(name: str) -> Backend:
    """The backend called ``name`` (its package is imported on first use)."""
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise ValueError(f"unknown backend {name!r} (expected one of {', '.join(names())})")
    backend = importlib.import_module(BUILTIN[name]).BACKEND
    _registered[name] = backend
    return backend


def register(backend: Backend) -> None:
    """Add a backend defined outside this package (a name may be registered once)."""
    if backend.name in BUILTIN or backend.name in _registered:
        raise ValueError(f"backend {backend.name!r} is already registered")
    _registered[backend.name] = backend


def unregister(name: str) -> None:
    """Remove a backend added with :func:`register` (built-in ones stay)."""
    if name in BUILTIN:
        raise ValueError(f"backend {name!r} is built in")
    _registered.pop(name, None)


__all__ = ["BUILTIN", "Backend", "UnsupportedSpec", "get", "names", "register", "unregister"]
