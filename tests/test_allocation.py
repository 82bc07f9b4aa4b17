"""`keras_pruning.allocation`: ERK targets and the bounds argument."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_pruning.allocation import (
    _check_allocation,
    _check_bounds,
    erk_masks,
    erk_sparsities,
)

pytestmark = pytest.mark.backends

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, database=None
)


def test_erk_follows_a_hand_computed_table():
    # Scores sum/prod: (100, 10) -> 0.11, (10, 10) -> 0.2. Kept 550 of 1100:
    # eps * (1000 * 0.11 + 100 * 0.2) = 550, eps = 550 / 130.
    eps = 550 / 130
    sparsities = erk_sparsities([(100, 10), (10, 10)], 0.5)
    assert sparsities == pytest.approx([1 - 0.11 * eps, 1 - 0.2 * eps])


def test_erk_keeps_small_layers_dense_when_their_density_would_pass_one():
    # (1000, 1000) -> 0.002; (4, 2) -> 0.75. At 50%, the small layer would
    # need a density above 1: it stays dense and the large one pays.
    sparsities = erk_sparsities([(1000, 1000), (4, 2)], 0.5)
    assert sparsities[1] == pytest.approx(0.0)
    assert sparsities[0] == pytest.approx(1 - (0.5 * 1_000_008 - 8) / 1_000_000)


def test_erk_bounds_win_when_they_cannot_meet_the_sparsity():
    sparsities = erk_sparsities([(100, 10), (10, 10)], 0.5, [(0.0, 0.3), (0.2, 1.0)])
    assert sparsities == pytest.approx([0.3, 1.0])


@PROPERTY_SETTINGS
@given(
    shapes=st.lists(
        st.lists(st.integers(1, 64), min_size=1, max_size=4), min_size=1, max_size=5
    ),
    sparsity=st.floats(0.0, 0.99),
)
def test_erk_meets_the_overall_sparsity_within_bounds(shapes, sparsity):
    sparsities = erk_sparsities(shapes, sparsity)
    sizes = [math.prod(s) for s in shapes]
    kept = sum(n * (1 - s) for n, s in zip(sizes, sparsities, strict=True))
    assert kept == pytest.approx((1 - sparsity) * sum(sizes), rel=1e-6, abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in sparsities)
    # Denser where sum(shape) / prod(shape) is larger.
    scores = [sum(s) / math.prod(s) for s in shapes]
    for a, b in zip(range(len(shapes)), range(1, len(shapes)), strict=False):
        if scores[a] > scores[b]:
            assert sparsities[a] <= sparsities[b] + 1e-9


@pytest.mark.parametrize(
    "value", [(0.2, 0.1), (-0.1, 0.5), (0.0, 1.0), (0.1, math.nan)]
)
def test_bounds_out_of_range_raise_value_error(value):
    with pytest.raises(
        ValueError, match=r"`sparsity_bounds`.*Received: sparsity_bounds="
    ):
        _check_bounds(value)


@pytest.mark.parametrize("value", [0.5, "0.1,0.2", (0.1,), (True, 0.5), (0.1, "x")])
def test_bounds_of_wrong_type_raise_type_error(value):
    with pytest.raises(TypeError, match=r"`sparsity_bounds` must be a pair"):
        _check_bounds(value)


def test_bounds_are_normalized_to_float_pairs():
    assert _check_bounds([0, 0.5]) == (0.0, 0.5)
    assert _check_bounds(None) is None


def test_numpy_numbers_are_accepted_as_bounds():
    assert _check_bounds((np.float32(0.0), np.float32(0.5))) == (0.0, 0.5)
    (sparsity,) = erk_sparsities([(4, 4)], 0.5, bounds=[(np.float32(0), 0.25)])
    assert type(sparsity) is float and sparsity == 0.25


def test_erk_masks_needs_a_list_of_tensors():
    with pytest.raises(TypeError, match=r"`weights` must be a list of tensors"):
        erk_masks("w", 0.5)


@pytest.mark.parametrize("value", ["uniform", "ERK", None, 1])
def test_unknown_allocation_raises(value):
    with pytest.raises(
        ValueError, match=r"`allocation` must be one of \('magnitude', 'erk'\)"
    ):
        _check_allocation(value)
