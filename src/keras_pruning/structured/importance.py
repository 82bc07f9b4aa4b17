"""Channel importance: which channels of a group matter.

A score function is pure: it takes one weight's slices as a matrix, a row
per position along the group's axis, and returns one score per row:
`fn(weights, gradients) -> scores` (`gradients` is `None` unless the
criterion needs them). A channel's group score is the sum of its rows'
scores over every weight of the group the criterion reads: for `l1`, `l2`
and `taylor`, the kernels of the layers that make and read the channel; for
`bn_scale`, the BatchNormalization scales `gamma`.
"""

from keras import ops

__all__ = ("l1", "l2", "taylor", "bn_scale", "CRITERIA")


def l1(weights, gradients=None):
    """`sum_j |w_ij|` per row."""
    del gradients
    return ops.sum(ops.abs(weights), axis=1)


def l2(weights, gradients=None):
    """`sum_j w_ij^2` per row (the squared L2 norm: the same ranking as the norm)."""
    del gradients
    return ops.sum(ops.square(weights), axis=1)


def taylor(weights, gradients):
    """First-order Taylor estimate of the loss change: `(sum_j w_ij g_ij)^2` per
    row, with `g = dL/dw` (Molchanov et al., 2019)."""
    return ops.square(ops.sum(weights * gradients, axis=1))


def bn_scale(weights, gradients=None):
    """`|gamma_i|`: BatchNormalization's scale of each channel (Liu et al., 2017)."""
    del gradients
    return ops.abs(weights[:, 0])


# name -> (score function, needs gradients, reads BatchNormalization gammas)
CRITERIA = {
    "l1": (l1, False, False),
    "l2": (l2, False, False),
    "taylor": (taylor, True, False),
    "bn_scale": (bn_scale, False, True),
}
