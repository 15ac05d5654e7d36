"""The report's notes on the machine: OpenBLAS kernels slower than the CPU can run."""

from __future__ import annotations

import pytest

from symbolic.bench.machine import AVX512, blas_kernels_warning

OPENBLAS = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31"}


@pytest.fixture(autouse=True)
def _no_coretype(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)


def test_avx2_kernels_on_an_avx512_cpu_are_reported():
    warning = blas_kernels_warning([dict(OPENBLAS, architecture="Haswell")], set(AVX512))
    assert "Haswell kernels, without AVX-512" in warning
    assert "OPENBLAS_CORETYPE=SkylakeX" in warning


def test_a_coretype_set_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    warning = blas_kernels_warning([dict(OPENBLAS, architecture="Haswell")], set(AVX512))
    assert warning.startswith("OPENBLAS_CORETYPE=Haswell in the environment makes OpenBLAS")
    assert "Without the variable" in warning


@pytest.mark.parametrize(
    ("blas", "flags"),
    [
        ([dict(OPENBLAS, architecture="SkylakeX")], set(AVX512)),  # the AVX-512 kernels
        ([dict(OPENBLAS, architecture="Cooperlake")], set(AVX512)),
        ([dict(OPENBLAS, architecture="Haswell")], {"avx2", "fma", "avx512f"}),  # AVX-512 in part
        ([dict(OPENBLAS, architecture="Haswell")], {"avx2", "fma"}),  # no AVX-512
        ([{"user_api": "blas", "internal_api": "mkl", "architecture": "Haswell"}], set(AVX512)),
        ([], set(AVX512)),  # no BLAS found
    ],
)
def test_nothing_to_report(blas, flags):
    assert blas_kernels_warning(blas, flags) == ""


def test_this_machine_is_read_without_error():
    assert isinstance(blas_kernels_warning(), str)
