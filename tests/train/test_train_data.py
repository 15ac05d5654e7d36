"""The training data: shapes, splits, determinism (symbolic/train/data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic.train.data import adding, adding_problem, digits_flat, digits_rows, one_hot, to_rows


@pytest.fixture(scope="module")
def flat():
    return digits_flat()


def test_digits_flat_shapes_and_range(flat):
    # 1797 images, 20% of each class held out: 360 test, 1437 train.
    assert flat.x_train.shape == (1437, 64)
    assert flat.x_test.shape == (360, 64)
    assert flat.y_train.shape == (1437,) and flat.y_test.shape == (360,)
    assert flat.x_train.dtype == np.float64
    assert flat.y_train.dtype == np.int64
    for x in (flat.x_train, flat.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert (flat.n_in, flat.n_out, flat.n_classes) == (64, 10, 10)
    assert not flat.sequential


def test_digits_split_is_stratified_and_complete(flat):
    from sklearn.datasets import load_digits

    digits = load_digits()
    total = np.bincount(digits.target, minlength=10)
    test = np.bincount(flat.y_test, minlength=10)
    train = np.bincount(flat.y_train, minlength=10)
    np.testing.assert_array_equal(test + train, total)
    # Stratified: every class keeps its share of the test set, to within one image.
    assert np.all(np.abs(test - 0.2 * total) <= 1)
    # The two parts are the whole data set: same multiset of (image, label) rows.
    both = np.concatenate([flat.x_train, flat.x_test]) * 16
    rows = np.column_stack([both, np.concatenate([flat.y_train, flat.y_test])])
    expected = np.column_stack([digits.data, digits.target])
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(expected, axis=0))


def test_digits_split_is_deterministic(flat):
    again = digits_flat()
    np.testing.assert_array_equal(again.x_test, flat.x_test)
    np.testing.assert_array_equal(again.y_train, flat.y_train)
    other = digits_flat(seed=1)
    assert not np.array_equal(other.y_test, flat.y_test)


def test_digits_float32(flat):
    small = digits_flat(dtype=np.float32)
    assert small.x_train.dtype == np.float32
    np.testing.assert_allclose(small.x_train, flat.x_train, rtol=1e-7)


def test_digits_rows_are_the_image_rows(flat):
    rows = digits_rows()
    assert rows.x_train.shape == (8, 1437, 8)
    assert rows.x_test.shape == (8, 360, 8)
    assert rows.sequential and rows.n_in == 8 and rows.n_train == 1437 and rows.n_test == 360
    np.testing.assert_array_equal(rows.y_test, flat.y_test)
    n = 17
    for t in range(8):
        np.testing.assert_array_equal(rows.x_train[t, n], flat.x_train[n, 8 * t : 8 * t + 8])
    assert rows.x_train.flags.c_contiguous


def test_to_rows_small():
    x = np.arange(8).reshape(2, 4)  # two 2x2 images
    np.testing.assert_array_equal(to_rows(x, side=2), [[[0, 1], [4, 5]], [[2, 3], [6, 7]]])


def test_adding_problem_layout():
    steps, n = 10, 500
    x, y = adding_problem(n, steps, seed=3)
    assert x.shape == (steps, n, 2) and y.shape == (n, 1)
    values, markers = x[..., 0], x[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert set(np.unique(markers)) == {0.0, 1.0}
    # Exactly two markers, one in each half.
    np.testing.assert_array_equal(markers[: steps // 2].sum(axis=0), 1)
    np.testing.assert_array_equal(markers[steps // 2 :].sum(axis=0), 1)
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=0))


def test_adding_problem_odd_length_and_dtype():
    x, y = adding_problem(200, 7, seed=0, dtype=np.float32)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x[:3, :, 1].sum(axis=0), 1)
    np.testing.assert_array_equal(x[3:, :, 1].sum(axis=0), 1)
    with pytest.raises(ValueError, match="seq_len"):
        adding_problem(5, 1)


def test_adding_problem_is_seeded():
    a = adding_problem(50, 20, seed=5)
    b = adding_problem(50, 20, seed=5)
    c = adding_problem(50, 20, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_adding_mean_predictor_scores_one_sixth():
    # The target is U1 + U2: mean 1, variance 2/12. A model must beat this baseline.
    _, y = adding_problem(200_000, 4, seed=0)
    assert abs(y.mean() - 1.0) < 0.01
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.003


def test_adding_dataset_sets_are_independent():
    small = adding(30, n_train=100, n_test=50, seed=0)
    large = adding(30, n_train=300, n_test=50, seed=0)
    assert small.x_train.shape == (30, 100, 2) and small.x_test.shape == (30, 50, 2)
    assert small.n_out == 1 and small.n_classes == 0 and small.n_in == 2
    # The test set does not depend on the size of the training set ...
    np.testing.assert_array_equal(small.x_test, large.x_test)
    # ... and is not a copy of training sequences.
    assert not np.array_equal(small.x_test, small.x_train[:, :50])


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3, np.float32), [[0, 0, 1], [1, 0, 0]])
    assert one_hot(np.array([1]), 2, np.float32).dtype == np.float32
