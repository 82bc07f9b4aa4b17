"""Pure mask functions, written with `keras.ops` only.

Masks are boolean tensors of the weight's shape: True keeps a weight, False
prunes it. A boolean takes one byte, a quarter of a float32 weight.
"""

from keras import ops

__all__ = ("num_kept", "magnitude_mask", "apply_mask")

MASK_DTYPE = "bool"


def num_kept(size, sparsity):
    """Number of weights a mask keeps: `k = max(round(size * (1 - sparsity)), 1)`.

    `round` is half-to-even, as in TFMOT; at least one weight is always kept.
    """
    return max(int(round(size * (1.0 - sparsity))), 1)


def magnitude_mask(weights, sparsity):
    """Keeps the `k = num_kept(n, sparsity)` largest-magnitude weights.

    Exactly `n - k` weights are pruned, even when magnitudes tie (ties are
    broken by flat index, lower first).

    Args:
        weights: a tensor of any shape.
        sparsity: a Python float in [0, 1).

    Returns:
        `(mask, threshold)`: a boolean mask of `weights`' shape, and the
        smallest kept magnitude (a float32 scalar).
    """
    magnitudes = ops.reshape(ops.abs(ops.cast(weights, "float32")), (-1,))
    size = int(magnitudes.shape[0])
    k = num_kept(size, sparsity)
    if k >= size:
        return ops.ones(ops.shape(weights), MASK_DTYPE), ops.min(magnitudes)
    values, indices = ops.top_k(magnitudes, k, sorted=True)
    flat_mask = ops.scatter(
        ops.expand_dims(indices, -1), ops.ones((k,), "uint8"), (size,)
    )
    return ops.reshape(ops.cast(flat_mask, MASK_DTYPE), ops.shape(weights)), values[
        k - 1
    ]


def apply_mask(weights, mask):
    """Returns `weights * mask`: the weights where the mask is True, else 0."""
    return ops.where(mask, weights, ops.zeros((), weights.dtype))
