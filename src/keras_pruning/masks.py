"""Pure mask functions, written with `keras.ops` only.

Masks are boolean tensors of the weight's shape: True keeps a weight, False
prunes it. A boolean takes one byte, a quarter of a float32 weight.
"""

import functools
import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_pruning.schedules import _check_sparsity

__all__ = (
    "num_kept",
    "magnitude_mask",
    "block_magnitude_mask",
    "m_by_n_mask",
    "global_magnitude_masks",
    "apply_mask",
)

MASK_DTYPE = "bool"
_RADIX_BITS = (11, 11, 10)  # digits of the 32-bit sort key, most significant first


def num_kept(size, sparsity):
    """Number of weights a mask keeps: `k = max(round(size * (1 - sparsity)), 1)`.

    `round` is half-to-even, as in TFMOT; at least one weight is always kept.
    """
    return max(int(round(size * (1.0 - sparsity))), 1)


def _check_weights(weights, name="weights"):
    dtype = getattr(weights, "dtype", None)
    try:
        kind = keras.backend.standardize_dtype(dtype)
    except (ValueError, TypeError):
        kind = str(dtype)
    numeric = kind.startswith(("float", "bfloat", "int", "uint"))
    if not hasattr(weights, "shape") or dtype is None or not numeric:
        raise TypeError(
            f"`{name}` must be a tensor or NumPy array of numbers. Received: "
            f"{name} of type {type(weights).__name__}"
            + ("" if dtype is None else f" and dtype {kind}")
        )


def _check_block_size(block_size):
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(b, numbers.Integral) for b in block_size)
        or any(isinstance(b, bool) for b in block_size)
    ):
        raise TypeError(
            "`block_size` must be a pair (r, c) of positive integers. "
            f"Received: block_size={block_size!r}"
        )
    if min(block_size) < 1:
        raise ValueError(
            "`block_size` must be a pair (r, c) of positive integers. "
            f"Received: block_size={tuple(block_size)!r}"
        )
    return tuple(int(b) for b in block_size)


def _check_pooling(pooling):
    if pooling not in ("avg", "max"):
        raise ValueError(
            f"`pooling` must be 'avg' or 'max'. Received: pooling={pooling!r}"
        )


def _kth_largest(values, k):
    """The exact `k`-th largest entry of a flat float32 tensor (1 <= k <= n).

    On PyTorch, one `top_k` (a partial selection there). On TensorFlow and
    JAX, whose `top_k` sorts (34 ms for 235k float32 on a CPU, eager), a radix
    select with static shapes, compiled by the caller (`_compiled`)."""
    if keras.backend.backend() == "torch":
        return ops.min(ops.top_k(values, k, sorted=False)[0])
    return _radix_kth_largest(values, k)


def _radix_kth_largest(values, k):
    """The `k`-th largest of a flat float32 tensor by radix select.

    Each float maps to a 32-bit key in the same order: its bits with the sign
    bit flipped, or all bits flipped for a negative number. The key
    is read in digits of `_RADIX_BITS` bits, most significant first; for each
    digit, a histogram of the entries that match the digits chosen so far
    finds the digit of the `k`-th largest. Three passes over the values, no
    sort, no data-dependent shape.
    """
    # A static last dimension: Keras's TensorFlow `view` fails on a dynamic one.
    column = ops.reshape(ops.cast(values, "float32"), (-1, 1))
    bits = ops.reshape(ops.view(column, "int32"), (-1,))
    # The unsigned key's bits: ~bits for negative floats, else the sign bit set.
    key = ops.where(
        bits < 0, ops.bitwise_invert(bits), ops.bitwise_xor(bits, -(1 << 31))
    )
    matching = ops.ones_like(values, MASK_DTYPE)
    rest = k  # rank of the k-th largest among the entries still matching
    shift = 32
    for width in _RADIX_BITS:
        shift -= width
        digit = ops.bitwise_and(ops.bitwise_right_shift(key, shift), (1 << width) - 1)
        # Entries that no longer match count in an extra bucket, then dropped.
        counts = _histogram(ops.where(matching, digit, 1 << width), (1 << width) + 1)
        counts = counts[: 1 << width]
        at_or_above = ops.flip(ops.cumsum(ops.flip(counts, 0)), 0)
        chosen = ops.sum(ops.cast(at_or_above >= rest, "int32")) - 1
        rest = rest - (ops.take(at_or_above, chosen) - ops.take(counts, chosen))
        matching = ops.logical_and(matching, ops.equal(digit, chosen))
    # All matching entries share the k-th largest's key, so its value.
    return ops.max(ops.where(matching, values, -np.inf))


def _histogram(ids, size):
    """How many of the int32 `ids` (all in `[0, size)`) equal each id."""
    if keras.backend.backend() == "jax":  # its bincount needs a concrete length
        return ops.segment_sum(ops.ones_like(ids), ids, num_segments=size)
    return ops.bincount(ids, minlength=size)


@functools.cache
def _compiled(function):
    """`function` compiled: `jax.jit` on JAX (once per input shape and dtype),
    `tf.function` on TensorFlow, traced once for all shapes of the same rank
    (`reduce_retracing=True`: pass flat tensors); unchanged on PyTorch. The
    function must not create tensors of data-dependent shape."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    return function


def _count_argument(k):
    """`k` as the compiled functions take it: a tensor where they are compiled
    (no new trace for each `k`), a Python int for PyTorch's `top_k`."""
    if keras.backend.backend() == "torch":
        return int(k)
    return ops.convert_to_tensor(k, "int32")


def magnitude_mask(weights, sparsity):
    """Keeps the `k = num_kept(n, sparsity)` largest-magnitude weights.

    With `t` the k-th largest magnitude, keeps every `|w| > t`, then the
    entries with `|w| == t` in flat-index order until `k` are kept: exactly
    `n - k` weights are pruned, even when magnitudes tie.

    Args:
        weights: a tensor of any shape.
        sparsity: a Python float in [0, 1).

    Returns:
        `(mask, threshold)`: a boolean mask of `weights`' shape, and the
        smallest kept magnitude `t` (a float32 scalar).
    """
    _check_weights(weights)
    sparsity = _check_sparsity("sparsity", sparsity)
    scores = ops.abs(ops.cast(weights, "float32"))
    flat = ops.reshape(scores, (-1,))
    flat_mask, threshold = _keep_largest(flat, num_kept(int(flat.shape[0]), sparsity))
    return ops.reshape(flat_mask, ops.shape(scores)), threshold


def _keep_largest(values, k):
    """`(mask, t)`: keeps exactly the `k` largest of a flat float32 tensor
    (ties in index order), `t` the smallest kept value. Keeps all when
    `k >= n`."""
    size = int(values.shape[0])
    if k >= size:
        return ops.ones((size,), MASK_DTYPE), ops.min(values)
    return _compiled(_select_largest)(values, _count_argument(k))


def _select_largest(values, k):
    """`_keep_largest` for `1 <= k <= n`, with static shapes:
    `mask = v > t`, plus the first `k - count(v > t)` entries equal to `t`."""
    threshold = _kth_largest(values, k)
    mask = values >= threshold

    def keep_first_ties():
        # Only with ties at the threshold: the int32 rank costs 4 bytes per entry.
        greater = values > threshold
        ties = ops.equal(values, threshold)
        room = k - ops.sum(ops.cast(greater, "int32"))
        tie_rank = ops.cumsum(ops.cast(ties, "int32"))
        return ops.logical_or(greater, ops.logical_and(ties, tie_rank <= room))

    too_many = ops.sum(ops.cast(mask, "int32")) > k
    return ops.cond(too_many, keep_first_ties, lambda: mask), threshold


# The smallest normal number of each float dtype.
_SMALLEST_NORMAL = {
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float32": 2.0**-126,
    "float64": 2.0**-1022,
}
# The lowest score of a kept weight.
_SMALLEST_KEPT_SCORE = _SMALLEST_NORMAL["float32"]


def _ranking_scores(scores, mask):
    """The scores a mask update ranks: `max(s, 2**-126)` where `mask` keeps,
    0 where it prunes. A kept weight scoring 0 (a taylor score wherever the
    gradient is 0, as for an input that is always 0) so ranks above every
    pruned one, whatever their order: pruned weights stay pruned while the
    sparsity does not decrease."""
    scores, mask = ops.convert_to_tensor(scores), ops.convert_to_tensor(mask)
    return ops.where(mask, ops.maximum(scores, _SMALLEST_KEPT_SCORE), 0.0)


def _reported_threshold(threshold):
    """The smallest kept score of `_ranking_scores`, reported with scores up
    to `2**-126` as 0."""
    return ops.where(threshold > _SMALLEST_KEPT_SCORE, threshold, 0.0)


def _update_unstructured(weights, masks, counts, scores):
    """Unstructured mask updates of several weights at once, on flat tensors
    (compiled: one call for all the weights that an update step sets, with
    static shapes).

    For each weight `w`, its mask, its count `k` and its scores (`None`:
    `|w|`; else the given scores), ranked where the mask keeps them
    (`_ranking_scores`): the mask of the `k` best, the smallest kept score
    (`_reported_threshold`), and `w` with every newly pruned entry set to 0.
    Returns `(finite, new_masks, thresholds, new_weights)`; `finite` is a
    boolean vector, whether each weight's scores are all finite, fetched once
    for all of them.
    """
    finite, new_masks, thresholds, new_weights = [], [], [], []
    for w, mask, k, given in zip(weights, masks, counts, scores, strict=True):
        found = ops.abs(ops.cast(w, "float32")) if given is None else given
        finite.append(ops.all(ops.isfinite(apply_mask(found, mask))))
        new_mask, threshold = _select_largest(_ranking_scores(found, mask), k)
        new_masks.append(new_mask)
        thresholds.append(_reported_threshold(threshold))
        new_weights.append(apply_mask(w, ops.logical_and(mask, new_mask)))
    return ops.stack(finite), new_masks, thresholds, new_weights


def _check_rank(weights, what):
    if len(weights.shape) < 2:
        raise ValueError(
            f"{what} needs weights of rank 2 or more. "
            f"Received: weights of shape {tuple(weights.shape)}"
        )


def _block_scores(weights, block_size, pooling):
    """`(L, R, C)` scores of the `r x c` blocks tiling the last two axes of
    `weights` (`L` = product of the leading axes): the mean or max `|w|` of
    each block's real weights. `|w|` itself for `(1, 1)`."""
    magnitudes = ops.abs(ops.cast(weights, "float32"))
    r, c = block_size
    if (r, c) == (1, 1):
        return magnitudes
    _check_rank(weights, f"A block mask (block_size={(r, c)})")
    rows, cols = weights.shape[-2:]
    # A block larger than the weight is one block of all of it.
    r, c = min(r, rows), min(c, cols)
    block_rows, block_cols = -(-rows // r), -(-cols // c)
    padding = [[0, 0], [0, block_rows * r - rows], [0, block_cols * c - cols]]
    padded = ops.pad(ops.reshape(magnitudes, (-1, rows, cols)), padding)
    blocks = ops.reshape(padded, (-1, block_rows, r, block_cols, c))
    if pooling == "max":  # padding zeros never exceed a magnitude
        return ops.max(blocks, axis=(2, 4))
    # Mean over the rows of a block, then over its columns, counting real
    # weights only (TFMOT's factorized pooling, in the same order). A padding
    # column has no rows: it divides 0 by 1 and adds nothing.
    valid = ops.reshape(
        ops.pad(ops.ones((1, rows, cols)), padding), (1, block_rows, r, block_cols, c)
    )
    row_means = ops.sum(blocks, axis=2) / ops.maximum(ops.sum(valid, axis=2), 1)
    return ops.sum(row_means, axis=3) / ops.sum(valid[:, :, 0], axis=3)


def _expand_blocks(block_mask, block_size, shape):
    """Repeats each entry of an `(L, R, C)` block mask over its block, and
    crops it to `shape`."""
    if tuple(block_size) == (1, 1):
        return block_mask
    r, c = min(block_size[0], shape[-2]), min(block_size[1], shape[-1])
    mask = ops.repeat(ops.repeat(block_mask, r, axis=1), c, axis=2)
    return ops.reshape(mask[:, : shape[-2], : shape[-1]], shape)


def block_magnitude_mask(weights, sparsity, block_size, pooling="avg"):
    """Keeps the `r x c` blocks of largest pooled magnitude.

    The last two axes of `weights` (`(input, output)` for a Dense kernel, and
    `(in, out)` at each spatial position of a convolution kernel) are tiled
    with `r x c` blocks from index 0; the last block of an axis that is not a
    multiple of the block is cut short. Each block scores the mean (`"avg"`)
    or the max (`"max"`) of its own `|w|`, and the
    `k = max(round(B * (1 - sparsity)), 1)` best of the `B` blocks are kept
    (`magnitude_mask` on the scores). The mask is constant over each block.

    Args:
        weights: a tensor of rank 2 or more.
        sparsity: a Python float in [0, 1): the fraction of blocks to prune.
        block_size: `(r, c)`, positive integers. `(1, 1)` is `magnitude_mask`.
        pooling: `"avg"` or `"max"`. Defaults to `"avg"`.

    Returns:
        `(mask, threshold)`: a boolean mask of `weights`' shape, and the
        smallest kept block score.

    Raises:
        ValueError: if `weights` has rank 1 and `block_size` is not `(1, 1)`.

    Examples:
        >>> w = np.arange(1.0, 9.0).reshape(4, 2)    # (input, output)
        >>> mask, _ = block_magnitude_mask(w, 0.5, (2, 1))
        >>> ops.convert_to_numpy(mask).T.astype(int)
        array([[0, 0, 1, 1],
               [0, 0, 1, 1]])
    """
    _check_weights(weights)
    block_size = _check_block_size(block_size)
    _check_pooling(pooling)
    scores = _block_scores(weights, block_size, pooling)
    block_mask, threshold = magnitude_mask(scores, sparsity)
    return _expand_blocks(block_mask, block_size, tuple(weights.shape)), threshold


def m_by_n_mask(weights, m, n, axis=-2):
    """Prunes the `m` smallest of every `n` consecutive weights along `axis`.

    TFMOT's convention: `(2, 4)` prunes 2 of every 4 weights, NVIDIA's 2:4.
    Groups start at index 0 of `axis`; when its length is not a multiple of
    `n`, the last group of `l < n` weights keeps `min(l, n - m)` of them (as
    TFMOT, which pads with zeros). Ties keep the lower index.

    Args:
        weights: a tensor of rank 2 or more.
        m: weights pruned per group, `1 <= m < n`.
        n: group length.
        axis: the axis groups run along. Defaults to `-2`, the input channels
            of a Dense (`(in, out)`) or convolution (`(..., in, out)`) kernel.

    Returns:
        `(mask, threshold)`: a boolean mask of `weights`' shape, and the
        smallest kept magnitude.

    Raises:
        ValueError: if `weights` has rank 1.

    Examples:
        >>> w = np.array([[0.1, 0.9], [-0.8, 0.2], [0.3, -0.5], [0.7, 0.4]])
        >>> mask, _ = m_by_n_mask(w, 2, 4)               # (input, output)
        >>> ops.convert_to_numpy(mask).T.astype(int)     # one row per output
        array([[0, 1, 0, 1],
               [1, 0, 1, 0]])
    """
    _check_weights(weights)
    for name, value in (("m", m), ("n", n), ("axis", axis)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                f"`{name}` must be an integer. Received: {name}={value!r} "
                f"(of type {type(value).__name__})"
            )
    if not 1 <= m < n:
        raise ValueError(
            f"`m` and `n` must satisfy 1 <= m < n. Received: m={m!r}, n={n!r}"
        )
    _check_rank(weights, f"An m-by-n mask ({m}, {n})")
    ndim = len(weights.shape)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`axis` must be in [-{ndim}, {ndim}) for weights of shape "
            f"{tuple(weights.shape)}. Received: axis={axis!r}"
        )
    magnitudes = ops.abs(ops.cast(weights, "float32"))
    moved = ops.moveaxis(magnitudes, int(axis), -1)
    length = moved.shape[-1]
    if n > length:
        # One short group, which keeps min(length, n - m) weights.
        m, n = max(int(m) - (int(n) - length), 0), length
        if m == 0:
            mask = ops.ones(ops.shape(weights), MASK_DTYPE)
            return mask, ops.min(magnitudes)
    m, n = int(m), int(n)
    padded = -(-length // n) * n
    # Padding of -1 loses to every magnitude: a short group keeps its own.
    rows = ops.pad(
        ops.reshape(moved, (-1, length)),
        [[0, 0], [0, padded - length]],
        constant_values=-1.0,
    )
    groups = ops.reshape(rows, (-1, n))
    # rank[g, i] = #{j : |w_j| > |w_i|, or |w_j| == |w_i| and j < i}, one j
    # at a time: memory stays that of the weights, and ties are deterministic.
    position = ops.arange(n)[None, :]
    rank = ops.zeros(ops.shape(groups), "int32")
    for j in range(n):
        other = groups[:, j : j + 1]
        beats = ops.logical_or(
            other > groups, ops.logical_and(ops.equal(other, groups), j < position)
        )
        rank = rank + ops.cast(beats, "int32")
    mask = ops.reshape(rank < n - m, (-1, padded))[:, :length]
    mask = ops.moveaxis(ops.reshape(mask, moved.shape), -1, axis)
    return mask, ops.min(ops.where(mask, magnitudes, math.inf))


def global_magnitude_masks(
    weights, sparsity, block_size=(1, 1), pooling="avg", bounds=None
):
    """Ranks several tensors together: one threshold for all of them.

    Keeps the `k = num_kept(N, sparsity)` largest magnitudes among all `N`
    weights of `weights` (ties broken by position in the concatenation), so
    the overall sparsity is exactly the target while each tensor's may differ.
    With a `block_size`, the `N` blocks of all tensors are ranked by their
    scores instead, as in `block_magnitude_mask`.

    With `bounds`, tensor `i` of `n_i` entries ends with a sparsity in
    `[floor_i, cap_i]`: it keeps at least `lo_i = ceil(n_i * (1 - cap_i))` and
    at most `hi_i = floor(n_i * (1 - floor_i))` entries (`_kept_range`). Each tensor keeps its
    `lo_i` largest, and the other `k - sum(lo)` kept entries are the largest
    of all entries ranked `lo_i + 1 .. hi_i` in their own tensor: the
    largest total magnitude the bounds allow. `k` is clipped to
    `[sum(lo), sum(hi)]`, so the bounds win when they cannot meet `sparsity`.

    Args:
        weights: a list of tensors of any shapes (rank 2 or more with a
            `block_size`).
        sparsity: a Python float in [0, 1).
        block_size: `(r, c)`. Defaults to `(1, 1)`: single weights.
        pooling: `"avg"` or `"max"`, for blocks. Defaults to `"avg"`.
        bounds: `None`, or one `(floor, cap)` pair per tensor, with
            `0 <= floor <= cap <= 1`. Defaults to `None` (no bounds).

    Returns:
        `(masks, threshold)`: one boolean mask per tensor, and the smallest
        kept magnitude (or block score).
    """
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError(
            "`weights` must be a non-empty list of tensors. "
            f"Received: weights of type {type(weights).__name__}"
        )
    for tensor in weights:
        _check_weights(tensor)
    sparsity = _check_sparsity("sparsity", sparsity)
    block_size = _check_block_size(block_size)
    _check_pooling(pooling)
    if bounds is not None:
        _check_bound_pairs(bounds, len(weights))
    scores = [_block_scores(w, block_size, pooling) for w in weights]
    flat = [ops.reshape(s, (-1,)) for s in scores]
    sizes = [int(f.shape[0]) for f in flat]
    every = ops.concatenate(flat, axis=0)
    k = num_kept(sum(sizes), sparsity)
    if bounds is None:
        mask, threshold = _keep_largest(every, k)
    else:
        mask = _bounded_largest(flat, sizes, k, bounds)
        threshold = ops.min(ops.where(mask, every, math.inf))
    masks, start = [], 0
    for w, s, size in zip(weights, scores, sizes, strict=True):
        block_mask = ops.reshape(mask[start : start + size], ops.shape(s))
        masks.append(_expand_blocks(block_mask, block_size, tuple(w.shape)))
        start += size
    return masks, threshold


def _check_bound_pairs(bounds, count):
    allowed = (
        f"`bounds` must be None or a list of {count} (floor, cap) pairs, one per "
        f"tensor, with 0 <= floor <= cap <= 1. Received: bounds={bounds!r}"
    )
    if not isinstance(bounds, (list, tuple)) or len(bounds) != count:
        raise TypeError(allowed)
    for pair in bounds:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in pair
            )
        ):
            raise TypeError(allowed)
        if not 0.0 <= pair[0] <= pair[1] <= 1.0:
            raise ValueError(allowed)


def _kept_range(size, floor, cap):
    """`(lo, hi)`: the fewest and most of `size` entries kept at a sparsity in
    `[floor, cap]`: `lo = max(ceil(size * (1 - cap)), 1)`,
    `hi = max(floor(size * (1 - floor)), lo)`."""
    tolerance = 1e-9 * size  # size * (1 - cap) in floating point
    low = max(math.ceil(size * (1.0 - cap) - tolerance), 1)
    return low, max(math.floor(size * (1.0 - floor) + tolerance), low)


def _bounded_largest(flat, sizes, k, bounds):
    """The flat mask of `global_magnitude_masks` with `bounds`."""
    ranges = [_kept_range(n, *b) for n, b in zip(sizes, bounds, strict=True)]
    lows, highs = [low for low, _ in ranges], [high for _, high in ranges]
    k = min(max(k, sum(lows)), sum(highs))
    forced, candidates = [], []
    for values, low, high in zip(flat, lows, highs, strict=True):
        kept_low = _keep_largest(values, low)[0]
        kept_high = _keep_largest(values, high)[0]
        forced.append(kept_low)
        # Scores are >= 0: -1 marks entries that cannot be chosen.
        open_ = ops.logical_and(kept_high, ops.logical_not(kept_low))
        candidates.append(ops.where(open_, values, -1.0))
    forced = ops.concatenate(forced, axis=0)
    remaining = k - sum(lows)
    if remaining == 0:
        return forced
    chosen = _keep_largest(ops.concatenate(candidates, axis=0), remaining)[0]
    return ops.logical_or(forced, chosen)


def _multiply_by_mask(weights, mask):
    """Returns `weights * cast(mask)`: the effective weights of a training
    step, computed as TFMOT computes them.

    Equal to `apply_mask(weights, mask)` while the pruned weights are finite
    (a mask update sets them to 0). One product, which the backward pass
    repeats, is cheaper than a `where` on every backend, and much cheaper on
    PyTorch's CPU kernels, where `where` slows down as masks get sparser
    (784x300: 68 us unpruned, 443 us half pruned, against 17 us for a
    product).
    """
    weights, mask = ops.convert_to_tensor(weights), ops.convert_to_tensor(mask)
    return weights * ops.cast(mask, weights.dtype)


def _upstream(args, upstream):
    """The upstream gradient that a `keras.ops.custom_gradient` function's
    `grad` receives: positionally or as `upstream=`, depending on the
    backend."""
    if upstream is None:
        (upstream,) = args
    return upstream


def _mask_gradient(weights, mask):
    """Returns `weights` unchanged, with gradient `dL/dw * cast(mask)`.

    The effective weights of a training step while every pruned weight is
    exactly 0: then `weights == weights * mask`, and both have the same
    gradient, but the forward pass computes no product. The benchmark MLP's
    step with masks never updated, timed by hand against dense: 1.10 to 1.12x
    with the product, 1.01 to 1.05x without, on TensorFlow and JAX.
    """
    weights, mask = ops.convert_to_tensor(weights), ops.convert_to_tensor(mask)

    @ops.custom_gradient
    def identity(weights):
        def grad(*args, upstream=None, variables=None):
            del variables
            upstream = _upstream(args, upstream)
            return upstream * ops.cast(mask, upstream.dtype)

        return weights, grad

    return identity(weights)


def _pruned_are_zero(weights, masks):
    """Whether every weight that its mask prunes is exactly 0, for lists of
    weights and their masks (a boolean scalar)."""
    return ops.all(
        ops.stack(
            [
                ops.all(ops.logical_or(mask, ops.equal(w, 0)))
                for w, mask in zip(weights, masks, strict=True)
            ]
        )
    )


def apply_mask(weights, mask):
    """Returns `weights * mask`: the weights where the mask is True, else 0."""
    # A full-shape zeros tensor is faster than a broadcast scalar on the
    # TensorFlow CPU backend (375 vs 461 us, forward and backward, 784x300).
    # JAX's `where` and `zeros_like` take tensors, not Keras variables.
    weights, mask = ops.convert_to_tensor(weights), ops.convert_to_tensor(mask)
    return ops.where(mask, weights, ops.zeros_like(weights))
