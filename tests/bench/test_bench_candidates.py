"""The rows the benchmark knows: --backends parsing, and the generated backends taken
from the renderer's list."""

from __future__ import annotations

import argparse

import pytest

from symbolic.backends import names as backend_names
from symbolic.bench.candidates import BACKENDS_HELP, DEFAULT_BACKENDS, parse_backends

BACKENDS = backend_names()


def test_backend_parsing():
    assert parse_backends("numpy, numba[blas1],jax") == ["numpy", "numba[blas1]", "jax"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_backends("numpy,tensorflow")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_backends("numba[sometimes]")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_backends("numpy[blas1]")  # only the Numba modules take a thread policy


def test_every_generated_backend_has_a_row_by_default():
    generated = [key for key in DEFAULT_BACKENDS if key.split("[")[0] in BACKENDS]
    assert [key for key in generated if "[" not in key] == list(BACKENDS)
    assert parse_backends(",".join(DEFAULT_BACKENDS)) == list(DEFAULT_BACKENDS)
    assert BACKENDS_HELP.startswith("comma-separated, from numpy, numba, numba[blas1|numba1|")
