"""Training data for ``derivgen train``: scikit-learn's digits and the adding problem.

Layouts follow the generated modules' API (DESIGN.md, "Generated module API"): a
feedforward layer takes ``x`` as ``(B, n_in)``; a recurrent layer takes ``(T, B, n_in)``,
so the batch axis of a sequence data set is axis 1, not 0.

Both data sets are deterministic: the digits' held-out split has a fixed seed (every
model, whatever its training seed, is scored on the same 360 images), and the adding
problem is drawn from a seeded generator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
# The pixels of load_digits are counts of set pixels in 4x4 blocks: 0..16.
_DIGITS_MAX = 16.0


@dataclass(frozen=True)
class Dataset:
    """A training set and a held-out test set.

    Attributes:
        name: Short name (``digits``, ``digits-rows``, ``adding``).
        x_train: Inputs, ``(N, n_in)`` for flat data or ``(T, N, n_in)`` for sequences.
        y_train: Class labels ``(N,)`` (int64) for classification, targets ``(N, n_out)``
            for regression.
        x_test: Like ``x_train``, for the held-out samples.
        y_test: Like ``y_train``, for the held-out samples.
        n_classes: Number of classes, or 0 for a regression task.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int = 0

    @property
    def sequential(self) -> bool:
        """Whether the inputs are ``(T, N, n_in)`` sequences."""
        return self.x_train.ndim == 3

    @property
    def n_in(self) -> int:
        """Input features per sample (per time step for sequences)."""
        return self.x_train.shape[-1]

    @property
    def n_out(self) -> int:
        """Output units a model needs: one per class, or the target's width."""
        return self.n_classes if self.n_classes else self.y_train.shape[-1]

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return self.x_train.shape[-2]

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return self.x_test.shape[-2]


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    # load_digits reads a file that ships with scikit-learn: no download.
    digits = load_digits()
    x = digits.data / _DIGITS_MAX
    y = digits.target.astype(np.int64)
    # Cached and shared by every caller: make accidental writes fail loudly.
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _digits_split(
    test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the digits and split them, stratified by class, with a fixed seed."""
    from sklearn.model_selection import train_test_split

    x, y = _load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return x_train, x_test, y_train, y_test


def digits_flat(
    *,
    dtype: np.dtype | type = np.float64,
    test_fraction: float = DIGITS_TEST_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
) -> Dataset:
    """The 8x8 digits as flat 64-pixel vectors in [0, 1], for the MLP.

    Args:
        dtype: float32 or float64.
        test_fraction: Share of each class held out for testing.
        seed: Seed of the stratified split (keep the default to compare models).

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(N, 64)`` and labels 0..9.
    """
    x_train, x_test, y_train, y_test = _digits_split(test_fraction, seed)
    return Dataset(
        name="digits",
        x_train=np.ascontiguousarray(x_train, dtype=dtype),
        y_train=y_train,
        x_test=np.ascontiguousarray(x_test, dtype=dtype),
        y_test=y_test,
        n_classes=10,
    )


def digits_rows(
    *,
    dtype: np.dtype | type = np.float64,
    test_fraction: float = DIGITS_TEST_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
) -> Dataset:
    """The digits read row by row: 8 time steps of 8 pixels, for a recurrent layer.

    The split is the same as :func:`digits_flat`'s (same samples, same order).

    Args:
        dtype: float32 or float64.
        test_fraction: Share of each class held out for testing.
        seed: Seed of the stratified split.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(8, N, 8)``: ``x[t, n]`` is row t of
        image n.
    """
    flat = digits_flat(dtype=dtype, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name="digits-rows",
        x_train=to_rows(flat.x_train),
        y_train=flat.y_train,
        x_test=to_rows(flat.x_test),
        y_test=flat.y_test,
        n_classes=10,
    )


def to_rows(x: np.ndarray, side: int = 8) -> np.ndarray:
    """Flat row-major images ``(N, side*side)`` -> sequences of rows ``(side, N, side)``."""
    n = x.shape[0]
    return np.ascontiguousarray(x.reshape(n, side, side).transpose(1, 0, 2))


def adding_problem(
    n: int,
    seq_len: int,
    *,
    seed: int | np.random.SeedSequence = 0,
    dtype: np.dtype | type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of the adding problem (Hochreiter & Schmidhuber, 1997).

    Each sequence has two channels: a value drawn from U(0, 1) and a marker that is 1 at
    exactly two steps, one in each half of the sequence, and 0 elsewhere. The target is
    the sum of the two marked values. Predicting the mean (1) scores an MSE of 1/6
    (the variance of a sum of two independent U(0, 1)).

    Args:
        n: Number of sequences.
        seq_len: Steps per sequence, T >= 2.
        seed: Seed of the generator.
        dtype: float32 or float64.

    Returns:
        ``(x, y)``: ``x`` of shape ``(T, n, 2)`` (channel 0 the values, channel 1 the
        markers) and ``y`` of shape ``(n, 1)``.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len: expected at least 2, got {seq_len}")
    rng = np.random.default_rng(seed)
    half = seq_len // 2
    values = rng.uniform(0.0, 1.0, (seq_len, n))
    first = rng.integers(0, half, n)
    second = rng.integers(half, seq_len, n)
    markers = np.zeros((seq_len, n))
    lanes = np.arange(n)
    markers[first, lanes] = 1.0
    markers[second, lanes] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dtype)
    y = (values[first, lanes] + values[second, lanes]).reshape(n, 1).astype(dtype)
    return x, y


def adding(
    seq_len: int,
    *,
    n_train: int = 20000,
    n_test: int = 2000,
    seed: int = 0,
    dtype: np.dtype | type = np.float64,
) -> Dataset:
    """A training set and a test set of the adding problem, from one seed.

    The two sets come from independent streams spawned from ``seed``, so the test set
    does not change when ``n_train`` does.

    Args:
        seq_len: Steps per sequence.
        n_train: Training sequences.
        n_test: Test sequences.
        seed: Seed of both sets.
        dtype: float32 or float64.

    Returns:
        A :class:`Dataset` with ``x`` of shape ``(T, N, 2)`` and ``y`` of shape ``(N, 1)``.
    """
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    x_train, y_train = adding_problem(n_train, seq_len, seed=train_seed, dtype=dtype)
    x_test, y_test = adding_problem(n_test, seq_len, seed=test_seed, dtype=dtype)
    return Dataset("adding", x_train, y_train, x_test, y_test)


def one_hot(labels: np.ndarray, n_classes: int, dtype: np.dtype | type) -> np.ndarray:
    """Class labels ``(N,)`` -> one-hot targets ``(N, n_classes)``."""
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
