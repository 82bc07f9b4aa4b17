"""How a model-wide sparsity is shared among weight tensors.

`global_pruning=True` makes the schedule's sparsity the sparsity of all the
pruned weights together. `"magnitude"` allocation ranks every weight against
every other (`masks.global_magnitude_masks`); `"erk"` fixes each tensor's
share from its shape alone (`erk_sparsities`), then prunes each tensor by its
own ranking. Both take per-tensor `(floor, cap)` bounds.
"""

import math
import numbers

import numpy as np
from keras import ops

from keras_pruning import masks as masks_lib
from keras_pruning.schedules import _check_sparsity

__all__ = ("ALLOCATIONS", "erk_sparsities", "erk_masks")

ALLOCATIONS = ("magnitude", "erk")
_NO_BOUNDS = (0.0, 1.0)
_BISECTION_STEPS = 200


def _erk_score(shape):
    """Erdős–Rényi-Kernel density scale: `sum(shape) / prod(shape)`."""
    return sum(shape) / math.prod(shape)


def erk_sparsities(shapes, sparsity, bounds=None):
    """Per-tensor sparsities with the Erdős–Rényi-Kernel rule (RigL).

    Tensor `i` of shape `s_i` and size `n_i` keeps a density
    `d_i = clip(eps * sum(s_i) / prod(s_i), 1 - cap_i, 1 - floor_i)`, with
    `eps` found by bisection so that `sum(n_i * d_i) = (1 - sparsity) * N`:
    small and thin tensors stay denser, large ones are pruned harder. When
    the bounds cannot meet `sparsity`, they win.

    Args:
        shapes: one shape (a tuple of positive ints) per tensor.
        sparsity: the overall sparsity, a float in [0, 1).
        bounds: `None`, or one `(floor, cap)` pair per tensor with
            `0 <= floor <= cap <= 1`. Defaults to `None`: `(0, 1)`.

    Returns:
        A list of floats `1 - d_i`, one per tensor, each in [0, 1].

    Examples:
        >>> [round(s, 3) for s in erk_sparsities([(100, 10), (10, 10)], 0.5)]
        [0.535, 0.154]
    """
    shapes = _check_shapes(shapes)
    sparsity = _check_sparsity("sparsity", sparsity)
    if bounds is None:
        bounds = [_NO_BOUNDS] * len(shapes)
    masks_lib._check_bound_pairs(bounds, len(shapes))
    sizes = [math.prod(shape) for shape in shapes]
    scores = [_erk_score(shape) for shape in shapes]
    lows = [1.0 - cap for _, cap in bounds]
    highs = [1.0 - floor for floor, _ in bounds]

    def densities(eps):
        return [
            min(max(eps * score, low), high)
            for score, low, high in zip(scores, lows, highs, strict=True)
        ]

    def kept(eps):
        return sum(n * d for n, d in zip(sizes, densities(eps), strict=True))

    target = (1.0 - sparsity) * sum(sizes)
    low_eps, high_eps = (
        0.0,
        max(high / score for score, high in zip(scores, highs, strict=True)),
    )
    for _ in range(_BISECTION_STEPS):
        middle = (low_eps + high_eps) / 2
        if kept(middle) < target:
            low_eps = middle
        else:
            high_eps = middle
    return [float(1.0 - d) for d in densities(high_eps)]


def erk_masks(weights, sparsity, block_size=(1, 1), pooling="avg", bounds=None):
    """Masks every tensor at its `erk_sparsities` target.

    Tensor `i` (of `n_i` entries, or blocks with a `block_size`) keeps its
    `k_i` best by magnitude (or pooled block score), with
    `k_i = num_kept(n_i, s_i)` clipped to its bounds' range, so a bounded
    tensor is never outside its bounds.

    Args:
        weights: a list of tensors (rank 2 or more with a `block_size`).
        sparsity: the overall sparsity, a float in [0, 1).
        block_size: `(r, c)`. Defaults to `(1, 1)`.
        pooling: `"avg"` or `"max"`, for blocks. Defaults to `"avg"`.
        bounds: `None`, or one `(floor, cap)` per tensor. Defaults to `None`.

    Returns:
        `(masks, thresholds)`: a boolean mask and the smallest kept score
        per tensor.
    """
    if not isinstance(weights, (list, tuple)) or not all(
        hasattr(w, "shape") for w in weights
    ):
        raise TypeError(
            "`weights` must be a list of tensors. Received: "
            f"weights={weights!r} (of type {type(weights).__name__})"
        )
    bounds = bounds or [_NO_BOUNDS] * len(weights)
    targets = erk_sparsities([tuple(w.shape) for w in weights], sparsity, bounds)
    masks, thresholds = [], []
    for weight, target, (floor, cap) in zip(weights, targets, bounds, strict=True):
        blocks = math.prod(masks_lib._block_scores(weight, block_size, pooling).shape)
        low, high = masks_lib._kept_range(blocks, floor, cap)
        kept = min(max(masks_lib.num_kept(blocks, target), low), high)
        mask, threshold = masks_lib.block_magnitude_mask(
            weight, 1.0 - kept / blocks, block_size, pooling
        )
        masks.append(mask)
        thresholds.append(threshold)
    return masks, thresholds


def _shared_masks(weights, sparsity, allocation, block_size, pooling, bounds):
    """`(masks, thresholds)` of `weights` at the overall `sparsity`, shared
    by `allocation`; `bounds` holds one `(floor, cap)` per tensor
    (`_NO_BOUNDS` for an unbounded one). One threshold value per tensor."""
    if allocation == "erk":
        return erk_masks(weights, sparsity, block_size, pooling, bounds)
    masks, threshold = masks_lib.global_magnitude_masks(
        weights,
        sparsity,
        block_size,
        pooling,
        bounds=None if all(b == _NO_BOUNDS for b in bounds) else bounds,
    )
    # Separate values: JAX's trainer donates each variable's buffer, and two
    # variables must not share one.
    value = float(ops.convert_to_numpy(threshold))
    return masks, [ops.convert_to_tensor(value, "float32") for _ in weights]


def _check_shapes(shapes):
    allowed = (
        "`shapes` must be a non-empty list of shapes, each a non-empty tuple of "
        f"positive integers. Received: shapes={shapes!r}"
    )
    if not isinstance(shapes, (list, tuple)) or not shapes:
        raise TypeError(allowed)
    checked = []
    for shape in shapes:
        if (
            not isinstance(shape, (list, tuple))
            or not shape
            or not all(isinstance(d, (int, np.integer)) for d in shape)
            or any(isinstance(d, bool) for d in shape)
        ):
            raise TypeError(allowed)
        if min(shape) < 1:
            raise ValueError(allowed)
        checked.append(tuple(int(d) for d in shape))
    return checked


def _check_allocation(allocation):
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"`allocation` must be one of {ALLOCATIONS}. Received: "
            f"allocation={allocation!r}"
        )
    return allocation


def _check_bounds(bounds):
    """`None`, or `bounds` as a `(floor, cap)` tuple of floats with
    `0 <= floor <= cap < 1`."""
    if bounds is None:
        return None
    allowed = (
        "`sparsity_bounds` must be a pair (floor, cap) of floats with "
        "0 <= floor <= cap < 1: the least and the most sparsity a layer may "
        f"end with. Received: sparsity_bounds={bounds!r}"
    )
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bounds
        )
    ):
        raise TypeError(allowed)
    floor, cap = (float(v) for v in bounds)
    if not 0.0 <= floor <= cap < 1.0:  # False for NaN too
        raise ValueError(allowed)
    return (floor, cap)
