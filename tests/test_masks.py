"""Mask functions: num_kept, magnitude_mask, block and m-by-n masks, apply_mask.

Ports the scenarios of TFMOT's `pruning_impl_test.py` (mask and threshold
construction, repeated mask updates) to our pure functions, plus property
tests. Unlike TFMOT (`mask = |w| >= threshold`, which keeps every tied
weight), we prune exactly `n - k` weights, breaking ties by flat index.
"""

import math

import keras
import numpy as np
import pytest
from conftest import gradients
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from keras_pruning import masks
from keras_pruning.masks import (
    apply_mask,
    block_magnitude_mask,
    global_magnitude_masks,
    m_by_n_mask,
    magnitude_mask,
    num_kept,
)

pytestmark = pytest.mark.backends

# JAX compiles every op for every new shape, so each example costs about a
# second there: its run draws fewer examples.
PROPERTY_SETTINGS = settings(
    max_examples=10 if keras.backend.backend() == "jax" else 50,
    deadline=None,
    derandomize=True,
    database=None,
)
# JAX computes in float32 unless `jax_enable_x64` is set.
APPLY_MASK_DTYPES = ["float16", "float32"] + (
    [] if keras.backend.backend() == "jax" else ["float64"]
)


def _mask(weights, sparsity):
    """`magnitude_mask` with numpy results: (mask, threshold)."""
    mask, threshold = magnitude_mask(weights, sparsity)
    assert keras.backend.standardize_dtype(mask.dtype) == "bool"
    assert keras.backend.standardize_dtype(threshold.dtype) == "float32"
    assert tuple(mask.shape) == np.shape(weights)
    assert tuple(threshold.shape) == ()
    return ops.convert_to_numpy(mask), ops.convert_to_numpy(threshold)


# --- num_kept -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sparsity", "expected"),
    [
        (100, 0.5, 50),
        (10, 0.2, 8),
        (10, 0.200000018, 8),  # sparsity math with a small error (TFMOT case)
        (1000, 0.9, 100),
        # Round half to even.
        (5, 0.5, 2),  # 2.5 -> 2
        (7, 0.5, 4),  # 3.5 -> 4
        (9, 0.5, 4),  # 4.5 -> 4
        (3, 0.5, 2),  # 1.5 -> 2
        (6, 0.25, 4),  # 4.5 -> 4
        (10, 0.75, 2),  # 2.5 -> 2
        (14, 0.75, 4),  # 3.5 -> 4
        # Sparsity 0 keeps every weight.
        (1, 0.0, 1),
        (17, 0.0, 17),
        (10_000, 0.0, 10_000),
        # At least one weight is always kept.
        (3, 0.999, 1),
        (2, 0.75, 1),  # 0.5 -> 0 -> 1
        (1, 0.5, 1),
        (1, 0.99, 1),
        (1000, 0.9999, 1),
    ],
)
def test_num_kept(size, sparsity, expected):
    k = num_kept(size, sparsity)
    assert k == expected
    assert type(k) is int


@PROPERTY_SETTINGS
@given(
    st.integers(min_value=1, max_value=100_000),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_num_kept_is_in_range_and_monotone(size, s1, s2):
    low, high = sorted((s1, s2))
    assert 1 <= num_kept(size, high) <= num_kept(size, low) <= size
    assert abs(num_kept(size, low) - size * (1 - low)) <= 1
    assert num_kept(size, 0.0) == size


# --- magnitude_mask on hand-written arrays --------------------------------------


def test_keeps_top_half_of_linspace():
    weights = np.linspace(1.0, 100.0, 100).astype("float32")
    mask, threshold = _mask(weights, 0.5)
    assert mask.sum() == 50
    np.testing.assert_array_equal(mask, weights > 50.5)
    assert threshold == np.float32(51.0)


def test_mask_and_threshold_with_inexact_sparsity():
    # [1, 2, ..., 10] at ~20% sparsity: 1 and 2 pruned, threshold 3.
    mask, threshold = _mask(np.arange(1, 11, dtype="float32"), 0.200000018)
    np.testing.assert_array_equal(mask, [False, False] + [True] * 8)
    assert threshold == 3.0


def test_negative_weights_count_by_magnitude():
    mask, threshold = _mask(np.array([-4.0, 1.0, -2.0, 3.0], "float32"), 0.5)
    np.testing.assert_array_equal(mask, [True, False, False, True])
    assert threshold == 3.0


def test_two_dimensional_weights():
    weights = np.array([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]], "float32")
    mask, threshold = _mask(weights, 0.5)
    np.testing.assert_array_equal(mask, [[False, True, False], [True, False, True]])
    assert threshold == 1.0


def test_four_dimensional_weights():
    weights = np.array(
        [
            [[[0.3, -0.9], [0.05, 0.6]]],
            [[[-0.7, 0.1], [0.2, -0.4]]],
        ],
        "float32",
    )
    assert weights.shape == (2, 1, 2, 2)
    mask, threshold = _mask(weights, 0.5)
    expected = [
        [[[False, True], [False, True]]],
        [[[True, False], [False, True]]],
    ]
    np.testing.assert_array_equal(mask, expected)
    assert threshold == np.float32(0.4)


def test_four_dimensional_conv_kernel_keeps_largest_quarter():
    weights = np.arange(-8, 8, dtype="float32").reshape(2, 2, 2, 2)
    # Magnitudes 8, 7, 7, 6, 6, ...: keep 4 of 16 -> -8, -7, 7, then the first
    # 6 by flat index, which is -6.
    mask, threshold = _mask(weights, 0.75)
    expected = np.isin(weights, [-8.0, -7.0, 7.0, -6.0])
    np.testing.assert_array_equal(mask, expected)
    assert threshold == 6.0


def test_sparsity_zero_keeps_everything_and_threshold_is_min_magnitude():
    weights = np.array([[-0.5, 2.0], [0.25, -1.0]], "float32")
    mask, threshold = _mask(weights, 0.0)
    assert mask.all()
    assert threshold == 0.25


def test_high_sparsity_keeps_one_weight():
    mask, threshold = _mask(np.array([0.1, -0.3, 0.2], "float32"), 0.999)
    np.testing.assert_array_equal(mask, [False, True, False])
    assert threshold == np.float32(0.3)


def test_single_weight_is_kept():
    mask, threshold = _mask(np.array([[-0.7]], "float32"), 0.9)
    np.testing.assert_array_equal(mask, [[True]])
    assert threshold == np.float32(0.7)


def test_ties_at_the_threshold_prune_exactly_n_minus_k():
    # k = 3: 3 and 2 are kept, then one of the three 1s (the first).
    weights = np.array([3.0, 1.0, 2.0, -1.0, 1.0, 0.0], "float32")
    mask, threshold = _mask(weights, 0.5)
    np.testing.assert_array_equal(mask, [True, True, True, False, False, False])
    assert threshold == 1.0


def test_all_equal_weights_prune_exactly_n_minus_k():
    weights = np.full((2, 3), -0.5, "float32")
    mask, threshold = _mask(weights, 0.5)
    assert mask.sum() == 3
    np.testing.assert_array_equal(mask, [[True, True, True], [False, False, False]])
    assert threshold == 0.5


@pytest.mark.parametrize(
    ("sparsity", "kept"), [(0.0, 12), (0.25, 9), (0.5, 6), (0.9, 1), (0.99, 1)]
)
def test_all_zero_weights_prune_exactly_n_minus_k(sparsity, kept):
    mask, threshold = _mask(np.zeros((3, 4), "float32"), sparsity)
    assert mask.sum() == kept
    assert mask.reshape(-1)[:kept].all()
    assert threshold == 0.0


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_weight_dtypes(dtype):
    weights = np.array([[1.0, -4.0], [3.0, -2.0]], dtype)
    mask, threshold = _mask(weights, 0.5)
    np.testing.assert_array_equal(mask, [[False, True], [True, False]])
    assert threshold == 3.0


def test_accepts_backend_tensors_and_variables():
    values = np.array([[1.0, -4.0], [3.0, -2.0]], "float32")
    for weights in (ops.convert_to_tensor(values), keras.Variable(values)):
        mask, threshold = _mask(weights, 0.5)
        np.testing.assert_array_equal(mask, [[False, True], [True, False]])
        assert threshold == 3.0


# --- apply_mask -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", APPLY_MASK_DTYPES)
def test_apply_mask_zeroes_pruned_weights(dtype):
    weights = ops.convert_to_tensor(np.array([[1.0, -2.0], [3.0, -4.0]], dtype))
    mask = ops.convert_to_tensor(np.array([[True, False], [False, True]]))
    masked = apply_mask(weights, mask)
    assert keras.backend.standardize_dtype(masked.dtype) == dtype
    np.testing.assert_array_equal(
        ops.convert_to_numpy(masked), np.array([[1.0, 0.0], [0.0, -4.0]], dtype)
    )


def test_apply_mask_with_all_true_and_all_false_masks():
    weights = ops.convert_to_tensor(np.array([0.5, -1.5, 2.5], "float32"))
    kept = apply_mask(weights, ops.ones((3,), "bool"))
    dropped = apply_mask(weights, ops.zeros((3,), "bool"))
    np.testing.assert_array_equal(ops.convert_to_numpy(kept), [0.5, -1.5, 2.5])
    np.testing.assert_array_equal(ops.convert_to_numpy(dropped), [0.0, 0.0, 0.0])


def test_repeated_updates_with_rising_sparsity():
    # TFMOT's conditional mask update: the sparsity rises at steps 1, 3 and 5;
    # the mask is recomputed from the already-masked weights each step.
    weights = ops.convert_to_tensor(np.linspace(1.0, 100.0, 100).astype("float32"))
    schedule = [0.0, 0.1, 0.1, 0.3, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    nonzero = []
    for sparsity in schedule:
        mask, _ = magnitude_mask(weights, sparsity)
        weights = apply_mask(weights, mask)
        nonzero.append(int(np.count_nonzero(ops.convert_to_numpy(weights))))
    assert nonzero == [100, 90, 90, 70, 70, 50, 50, 50, 50, 50]
    survivors = ops.convert_to_numpy(weights)
    np.testing.assert_array_equal(survivors[50:], np.linspace(51.0, 100.0, 50))


# --- properties -----------------------------------------------------------------

# No subnormal floats: TensorFlow's and XLA's CPU kernels flush them to zero.
weight_arrays = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
    elements=st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False, width=32, allow_subnormal=False),
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5]),  # ties
    ),
)
mask_sparsities = st.floats(min_value=0.0, max_value=0.999)


def kernel_arrays(max_side):
    """float32 weights of rank 2 to 4 for block and m-by-n masks, with ties
    (no subnormal floats, as `weight_arrays`)."""
    return hnp.arrays(
        dtype=np.float32,
        shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=max_side),
        elements=st.one_of(
            st.floats(-10, 10, allow_nan=False, width=32, allow_subnormal=False),
            st.sampled_from([0.0, 1.0, -1.0]),
        ),
    )


@PROPERTY_SETTINGS
@given(weight_arrays, mask_sparsities)
def test_mask_keeps_num_kept_largest_magnitudes(weights, sparsity):
    mask, threshold = _mask(weights, sparsity)
    magnitudes = np.abs(weights)
    assert mask.sum() == num_kept(weights.size, sparsity)
    kept, pruned = magnitudes[mask], magnitudes[~mask]
    assert threshold == kept.min()
    if pruned.size:
        assert kept.min() >= pruned.max()


@PROPERTY_SETTINGS
@given(weight_arrays, mask_sparsities)
def test_apply_mask_keeps_exactly_the_masked_weights(weights, sparsity):
    mask, _ = magnitude_mask(weights, sparsity)
    masked = ops.convert_to_numpy(apply_mask(ops.convert_to_tensor(weights), mask))
    mask = ops.convert_to_numpy(mask)
    assert masked.dtype == np.float32
    np.testing.assert_array_equal(masked, np.where(mask, weights, 0.0))
    # Masking again at the same sparsity prunes nothing that survived.
    remasked, _ = _mask(masked, sparsity)
    assert np.count_nonzero(masked[~remasked]) == 0


@PROPERTY_SETTINGS
@given(
    hnp.arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.one_of(
            st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
            st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 0.5, 3e38, -3e38]),
        ),
    ),
    st.data(),
)
def test_radix_select_finds_the_exact_kth_largest(values, data):
    k = data.draw(st.integers(1, values.size))
    select = masks._compiled(masks._radix_kth_largest)
    found = select(ops.convert_to_tensor(values), masks._count_argument(k))
    assert float(found) == np.sort(values)[::-1][k - 1]


def _large_cases():
    rng = np.random.default_rng(7)
    size = 300_007  # not a multiple of any radix bucket count or stride
    periodic = rng.random(size).astype("float32") + 1.0
    periodic[:: size // (1 << 14)] = 0.0  # a strided sample would see only zeros
    return {
        "normal": rng.standard_normal(size).astype("float32"),
        "heavy_ties": np.round(rng.standard_normal(size), 1).astype("float32"),
        "all_equal": np.full(size, 0.5, "float32"),
        "sorted": np.linspace(-1.0, 1.0, size, dtype="float32"),
        "periodic_zeros": periodic,
    }


@pytest.mark.parametrize("case", sorted(_large_cases()))
@pytest.mark.parametrize("sparsity", [0.0001, 0.3, 0.5, 0.9, 0.9999])
def test_large_weights_get_exact_masks(case, sparsity):
    weights = _large_cases()[case]
    k = num_kept(weights.size, sparsity)
    expected_threshold = np.sort(np.abs(weights))[::-1][k - 1]
    mask, threshold = _mask(weights, sparsity)
    assert int(mask.sum()) == k
    assert float(threshold) == expected_threshold
    kept, pruned = np.abs(weights)[mask], np.abs(weights)[~mask]
    assert kept.min() >= pruned.max()
    # Ties at the threshold are kept lowest flat index first.
    tied = np.flatnonzero(np.abs(weights) == expected_threshold)
    kept_tied = np.flatnonzero(mask & (np.abs(weights) == expected_threshold))
    np.testing.assert_array_equal(kept_tied, tied[: kept_tied.size])


def test_global_masks_share_one_threshold():
    small = np.array([[0.1, 0.9], [0.2, 0.8]], "float32")  # 4 weights
    large = np.array([0.3, -0.7, 0.05, 0.6, -0.4, 0.5], "float32")  # 6 weights
    masks, threshold = global_magnitude_masks([small, large], 0.5)
    # The 5 largest of all 10 magnitudes: 0.9, 0.8, 0.7, 0.6, 0.5.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(masks[0]), [[False, True], [False, True]]
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(masks[1]), [False, True, False, True, False, True]
    )
    assert float(threshold) == pytest.approx(0.5)


def test_global_masks_break_ties_by_position_across_tensors():
    masks, _ = global_magnitude_masks(
        [np.ones(3, "float32"), np.ones(3, "float32")], 0.5
    )
    assert [ops.convert_to_numpy(m).tolist() for m in masks] == [
        [True, True, True],
        [False, False, False],
    ]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_global_masks_keep_exactly_num_kept_of_the_total(sizes, sparsity, seed):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=n).astype("float32") for n in sizes]
    masks, threshold = global_magnitude_masks(weights, sparsity)
    kept = sum(int(ops.convert_to_numpy(m).sum()) for m in masks)
    assert kept == num_kept(sum(sizes), sparsity)
    for w, m in zip(weights, masks, strict=True):
        m = ops.convert_to_numpy(m)
        assert m.shape == w.shape
        assert np.all(np.abs(w[m]) >= float(threshold))
        assert np.all(np.abs(w[~m]) <= float(threshold))


def test_global_masks_rank_blocks_across_tensors():
    # (2, 1) blocks: column means of row pairs. Scores 1, 2 | 3, 6 | 5, 4.
    first = np.array([[1.0, 2.0], [1.0, 2.0]], "float32")
    second = np.array([[2.0, 8.0], [4.0, 4.0], [5.0, 4.0], [5.0, 4.0]], "float32")
    masks, threshold = global_magnitude_masks([first, second], 0.5, (2, 1))
    # 6 blocks, 3 kept: 6, 5 and 4.
    np.testing.assert_array_equal(ops.convert_to_numpy(masks[0]), np.zeros((2, 2)))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(masks[1]), [[0, 1], [0, 1], [1, 1], [1, 1]]
    )
    assert float(threshold) == 4.0


# --- block_magnitude_mask -------------------------------------------------------


def _block_mask(weights, sparsity, block_size, pooling="avg"):
    mask, threshold = block_magnitude_mask(weights, sparsity, block_size, pooling)
    assert keras.backend.standardize_dtype(mask.dtype) == "bool"
    assert tuple(mask.shape) == np.shape(weights)
    assert tuple(threshold.shape) == ()
    return ops.convert_to_numpy(mask).astype(int), float(threshold)


# 1..35 in a 5x7 (input, output) kernel, 2x3 blocks: 3x3 blocks, the last row
# and column of blocks cut short. Block means (max in brackets):
#     5.5 (10)    8.5 (13)   10.5 (14)
#    19.5 (24)   22.5 (27)   24.5 (28)
#    30   (31)   33   (34)   35   (35)
# 9 blocks at sparsity 0.5 keep round(4.5) = 4 (half to even).
ARANGE_5X7 = np.arange(1, 36, dtype="float32").reshape(5, 7)


@pytest.mark.parametrize(("pooling", "threshold"), [("avg", 24.5), ("max", 28.0)])
def test_block_mask_hand_computed_table(pooling, threshold):
    # Both keep the same 4 blocks: means 35, 33, 30, 24.5; maxima 35, 34, 31, 28.
    mask, got = _block_mask(ARANGE_5X7, 0.5, (2, 3), pooling)
    np.testing.assert_array_equal(
        mask,
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 0, 1],
            [1, 1, 1, 1, 1, 1, 1],
        ],
    )
    assert got == threshold


def test_block_16x1_is_sixteen_inputs_of_one_output():
    # A Dense kernel (32 inputs, 2 outputs): output 0 has a strong first half.
    weights = np.full((32, 2), 0.1, "float32")
    weights[:16, 0] = 1.0
    weights[16:, 1] = 0.5
    mask, threshold = _block_mask(weights, 0.5, (16, 1))
    np.testing.assert_array_equal(mask[:, 0], [1] * 16 + [0] * 16)
    np.testing.assert_array_equal(mask[:, 1], [0] * 16 + [1] * 16)
    assert threshold == 0.5


def test_partial_blocks_average_their_own_weights_only():
    # Rows [1, 1] and [1.2]: the short block scores 1.2, not (1.2 + 0) / 2.
    weights = np.array([[1.0], [1.0], [1.2]], "float32")
    mask, threshold = _block_mask(weights, 0.5, (2, 1))
    np.testing.assert_array_equal(mask, [[0], [0], [1]])
    assert threshold == pytest.approx(1.2)


def test_max_pooling_scores_a_block_by_its_largest_weight():
    # Mean prefers the even block, max the block with one large weight.
    weights = np.array([[0.6], [0.6], [0.0], [1.0]], "float32")
    np.testing.assert_array_equal(
        _block_mask(weights, 0.5, (2, 1), "avg")[0], [[1], [1], [0], [0]]
    )
    np.testing.assert_array_equal(
        _block_mask(weights, 0.5, (2, 1), "max")[0], [[0], [0], [1], [1]]
    )


def test_conv_kernel_blocks_tile_in_out_at_each_spatial_position():
    # (kh, kw, in, out) = (2, 1, 2, 2) with 2x2 blocks: one block per tap,
    # ranked together. Tap 0 scores 0.25, tap 1 scores 2.5.
    weights = np.array(
        [[[[0.1, -0.2], [0.3, 0.4]]], [[[1.0, 2.0], [-3.0, 4.0]]]], "float32"
    )
    mask, threshold = _block_mask(weights, 0.5, (2, 2))
    np.testing.assert_array_equal(mask[0], np.zeros((1, 2, 2)))
    np.testing.assert_array_equal(mask[1], np.ones((1, 2, 2)))
    assert threshold == 2.5


def test_a_block_larger_than_the_weight_is_one_block_always_kept():
    mask, threshold = _block_mask(np.array([[0.5, -1.5]], "float32"), 0.9, (4, 4))
    np.testing.assert_array_equal(mask, [[1, 1]])
    assert threshold == 1.0


def test_block_1x1_is_magnitude_mask():
    weights = np.array([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]], "float32")
    mask, threshold = _block_mask(weights, 0.5, (1, 1))
    np.testing.assert_array_equal(mask, _mask(weights, 0.5)[0])
    assert threshold == 1.0


def test_block_mask_rejects_rank_one_weights():
    with pytest.raises(ValueError, match=r"rank 2 or more.*shape \(4,\)"):
        block_magnitude_mask(np.ones(4, "float32"), 0.5, (2, 1))


def _reference_block_scores(weights, block_size, pooling):
    """NumPy loops: the score of every block, `(L, R, C)`."""
    r, c = block_size
    rows, cols = weights.shape[-2:]
    lead = np.abs(weights.reshape(-1, rows, cols))
    pool = np.mean if pooling == "avg" else np.max
    return np.array(
        [
            [
                [pool(w[i : i + r, j : j + c]) for j in range(0, cols, c)]
                for i in range(0, rows, r)
            ]
            for w in lead
        ]
    )


@PROPERTY_SETTINGS
@given(
    weights=kernel_arrays(max_side=7),
    block_size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    pooling=st.sampled_from(["avg", "max"]),
    sparsity=mask_sparsities,
)
def test_block_mask_keeps_num_kept_best_blocks(weights, block_size, pooling, sparsity):
    mask, threshold = _block_mask(weights, sparsity, block_size, pooling)
    r, c = block_size
    rows, cols = weights.shape[-2:]
    scores = _reference_block_scores(weights, block_size, pooling)
    # Constant over each block: the block mask, expanded and cropped.
    block_mask = mask.reshape(-1, rows, cols)[:, ::r, ::c].astype(bool)
    expanded = np.repeat(np.repeat(block_mask, r, axis=1), c, axis=2)
    np.testing.assert_array_equal(
        mask, expanded[:, :rows, :cols].reshape(weights.shape)
    )
    assert block_mask.sum() == num_kept(scores.size, sparsity)
    assert threshold == pytest.approx(scores[block_mask].min(), rel=1e-5)
    if (~block_mask).any():
        assert scores[block_mask].min() >= scores[~block_mask].max() * (1 - 1e-5)


# --- m_by_n_mask ----------------------------------------------------------------


def _m_by_n(weights, m, n, axis=-2):
    mask, threshold = m_by_n_mask(weights, m, n, axis)
    assert keras.backend.standardize_dtype(mask.dtype) == "bool"
    assert tuple(mask.shape) == np.shape(weights)
    return ops.convert_to_numpy(mask).astype(int), float(threshold)


def test_two_by_four_hand_computed_table():
    # Dense kernel (6 inputs, 2 outputs), shown transposed: one row per output.
    # Groups of 4 inputs keep their 2 largest |w|; ties keep the lower index;
    # the short last group (2 inputs) keeps min(2, 4 - 2) = 2.
    weights = np.array(
        [[3.0, -1.0, 2.0, 0.5, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0, -2.0, 0.0]], "float32"
    ).T
    mask, threshold = _m_by_n(weights, 2, 4)
    np.testing.assert_array_equal(mask.T, [[1, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1]])
    assert threshold == 0.0  # the smallest kept magnitude


def test_one_by_three_keeps_two_of_every_three():
    weights = np.array([[0.1], [-0.5], [0.3], [0.9], [0.2], [-0.4], [0.7]], "float32")
    mask, threshold = _m_by_n(weights, 1, 3)
    # Groups (0.1, 0.5, 0.3), (0.9, 0.2, 0.4), (0.7): the last keeps its one.
    np.testing.assert_array_equal(mask[:, 0], [0, 1, 1, 1, 0, 1, 1])
    assert threshold == pytest.approx(0.3)


def test_m_by_n_groups_run_along_the_input_channels_of_a_conv_kernel():
    # (kh, kw, in, out) = (1, 2, 4, 1): each tap's 4 input channels is a group.
    weights = np.array([[[[1.0], [4.0], [3.0], [2.0]], [[8.0], [5.0], [6.0], [7.0]]]])
    mask, _ = _m_by_n(weights.astype("float32"), 3, 4)
    np.testing.assert_array_equal(mask[0, 0, :, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(mask[0, 1, :, 0], [1, 0, 0, 0])
    # Along another axis, the groups change: axis 1 pairs the two taps.
    mask, _ = _m_by_n(weights.astype("float32"), 1, 2, axis=1)
    np.testing.assert_array_equal(mask[0, :, :, 0], [[0, 0, 0, 0], [1, 1, 1, 1]])


def test_m_by_n_mask_rejects_rank_one_weights():
    with pytest.raises(ValueError, match=r"rank 2 or more.*shape \(8,\)"):
        m_by_n_mask(np.ones(8, "float32"), 2, 4)


def _reference_m_by_n(weights, m, n, axis):
    """NumPy loops: a stable sort per group keeps the lower index on ties."""
    moved = np.moveaxis(np.abs(weights), axis, -1)
    mask = np.zeros(moved.shape, bool)
    for index in np.ndindex(moved.shape[:-1]):
        for start in range(0, moved.shape[-1], n):
            group = moved[index][start : start + n]
            kept = np.argsort(-group, kind="stable")[: n - m]
            mask[index][start + kept] = True
    return np.moveaxis(mask, -1, axis)


@PROPERTY_SETTINGS
@given(
    weights=kernel_arrays(max_side=9),
    m_by_n=st.integers(2, 8).flatmap(
        lambda n: st.tuples(st.integers(1, n - 1), st.just(n))
    ),
    axis=st.sampled_from([-2, 0, -1]),
)
def test_m_by_n_mask_matches_a_stable_sort_per_group(weights, m_by_n, axis):
    m, n = m_by_n
    mask, threshold = _m_by_n(weights, m, n, axis)
    np.testing.assert_array_equal(mask, _reference_m_by_n(weights, m, n, axis))
    assert threshold == np.abs(weights)[mask.astype(bool)].min()


# --- global masks with bounds ------------------------------------------------


def test_global_masks_with_bounds_follow_a_hand_computed_table():
    small = np.array([0.9, 0.8, 0.7, 0.6], "float32")
    large = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.05], "float32")
    # 50% of 10: keep 5. Unbounded, all 4 of `small` and 1 of `large` stay.
    # A floor of 50% lets `small` keep at most 2; a cap of 50% makes `large`
    # keep at least 3: small keeps 0.9, 0.8 and large its 3 largest.
    masks, threshold = global_magnitude_masks(
        [small, large], 0.5, bounds=[(0.5, 0.9), (0.0, 0.5)]
    )
    assert ops.convert_to_numpy(masks[0]).tolist() == [True, True, False, False]
    assert ops.convert_to_numpy(masks[1]).tolist() == [True, True, True] + [False] * 3
    assert float(threshold) == pytest.approx(0.3)


def test_global_masks_bounds_win_when_they_cannot_meet_the_sparsity():
    weights = [np.arange(1.0, 11.0, dtype="float32"), np.arange(1.0, 5.0)]
    # Caps of 20% force ceil(8) + ceil(3.2) = 12 kept of 14, not the 7 of 50%.
    masks, _ = global_magnitude_masks(weights, 0.5, bounds=[(0.0, 0.2)] * 2)
    assert [int(ops.convert_to_numpy(m).sum()) for m in masks] == [8, 4]


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
    data=st.data(),
)
def test_global_masks_with_bounds_keep_each_tensor_within_them(sizes, sparsity, data):
    rng = np.random.default_rng(len(sizes))
    weights = [rng.normal(size=n).astype("float32") for n in sizes]
    bounds = []
    for _ in sizes:
        floor = data.draw(st.floats(0.0, 0.9))
        bounds.append((floor, data.draw(st.floats(floor, 0.99))))
    masks, _ = global_magnitude_masks(weights, sparsity, bounds=bounds)
    kept = [int(ops.convert_to_numpy(m).sum()) for m in masks]
    # lo = ceil(n (1 - cap)), hi = floor(n (1 - floor)): at least one kept,
    # and lo wins when no whole count lies between them. Products within
    # n * 1e-9 of a whole number count as it (floating-point error).
    lows = [
        max(math.ceil(n * (1 - cap) - n * 1e-9), 1)
        for n, (_, cap) in zip(sizes, bounds, strict=True)
    ]
    highs = [
        max(math.floor(n * (1 - floor) + n * 1e-9), low)
        for n, (floor, _), low in zip(sizes, bounds, lows, strict=True)
    ]
    for n, k, low, high, (floor, cap) in zip(
        sizes, kept, lows, highs, bounds, strict=True
    ):
        assert low <= k <= high
        if k > 1 and low < high:
            assert floor - 1e-9 <= 1 - k / n <= cap + 1e-9
    wanted = num_kept(sum(sizes), sparsity)
    assert sum(kept) == min(max(wanted, sum(lows)), sum(highs))
    # Within each tensor, a kept weight outranks every pruned one.
    for w, m in zip(weights, masks, strict=True):
        m = ops.convert_to_numpy(m)
        if m.any() and not m.all():
            assert np.abs(w[m]).min() >= np.abs(w[~m]).max()


@PROPERTY_SETTINGS
@given(
    m=st.integers(1, 10**12),
    extra=st.integers(1, 10**12),
    axis=st.sampled_from([0, 1]),
)
def test_m_by_n_longer_than_the_axis_is_one_short_group(m, extra, axis):
    # No padding to n: a huge n costs no memory.
    weights = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    mask, _ = _m_by_n(weights, m, m + extra, axis)
    np.testing.assert_array_equal(mask, _reference_m_by_n(weights, m, m + extra, axis))


@PROPERTY_SETTINGS
@given(
    block_size=st.tuples(st.integers(1, 10**12), st.integers(1, 10**12)),
    sparsity=st.floats(0.0, 0.99),
    pooling=st.sampled_from(["avg", "max"]),
)
def test_blocks_larger_than_the_weight_are_cut_to_it(block_size, sparsity, pooling):
    weights = np.random.default_rng(0).normal(size=(2, 7, 5)).astype("float32")
    cut = (min(block_size[0], 7), min(block_size[1], 5))
    mask, threshold = block_magnitude_mask(weights, sparsity, block_size, pooling)
    expected, expected_threshold = block_magnitude_mask(weights, sparsity, cut, pooling)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(mask), ops.convert_to_numpy(expected)
    )
    assert float(threshold) == float(expected_threshold)


def test_mask_gradient_passes_weights_through_and_masks_their_gradient():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(5, 4)).astype("float32")
    weights = keras.Variable(initial)
    mask = rng.random((5, 4)) < 0.5
    upstream = rng.normal(size=(5, 4)).astype("float32")
    values = ops.convert_to_numpy(masks._mask_gradient(weights, mask))
    np.testing.assert_array_equal(values, initial)
    (gradient,) = gradients(
        lambda: ops.sum(
            masks._mask_gradient(weights, mask) * ops.convert_to_tensor(upstream)
        ),
        [weights],
    )
    np.testing.assert_array_equal(gradient, np.where(mask, upstream, 0.0))


def test_pruned_are_zero_looks_only_at_pruned_positions():
    mask = np.array([[True, False], [False, True]])
    assert bool(masks._pruned_are_zero(np.array([[3.0, 0.0], [-0.0, 5.0]]), mask))
    assert not bool(masks._pruned_are_zero(np.array([[3.0, 1e-30], [0.0, 5.0]]), mask))
    assert not bool(masks._pruned_are_zero(np.array([[0.0, np.nan], [0.0, 0.0]]), mask))
