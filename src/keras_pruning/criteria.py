"""Pruning criteria: which single weights matter.

A criterion is a pure function `(weights, gradients) -> scores` of
`keras.ops` tensors of one shape; the lowest scores are pruned. `weights` are
the effective (masked) weights, and `gradients` the loss gradients with
respect to them, summed over the training steps since the last mask update
(`None` for `magnitude`, which needs none). Scores are taken as absolute
values; masked weights always score 0 and rank below every kept weight, even
one that scores 0, so they stay pruned while the sparsity grows.

Pass a name or your own function as `criterion=` to `prune_low_magnitude`.
To save and load a model pruned with your own function, register it with
`@keras.saving.register_keras_serializable()`.
"""

import keras
from keras import ops

__all__ = ("CRITERIA", "magnitude", "taylor")


def magnitude(weights, gradients=None):
    """`|w|`: TFMOT's criterion, and the default."""
    del gradients
    return ops.abs(weights)


def taylor(weights, gradients):
    """`|w * g|` with `g = sum_t dL/dw_t` since the last mask update.

    The first-order Taylor estimate of how much the loss changes when `w` is
    set to 0 (Molchanov et al., 2017), accumulated over the steps between
    mask updates. Before any gradient is accumulated (a mask update at the
    first step), every score is 0 and magnitudes decide.
    """
    return ops.abs(weights * gradients)


CRITERIA = {"magnitude": magnitude, "taylor": taylor}


def _check_criterion(criterion):
    """Returns `criterion` if it is a name in `CRITERIA` or a callable."""
    if isinstance(criterion, str) and criterion in CRITERIA:
        return criterion
    if callable(criterion) and not isinstance(criterion, type):
        return criterion
    raise ValueError(
        f"`criterion` must be one of {tuple(CRITERIA)} or a function "
        "`(weights, gradients) -> scores`. Received: "
        f"criterion={criterion!r}"
    )


def _needs_gradients(criterion):
    return criterion != "magnitude"


def _serialize(criterion):
    if isinstance(criterion, str):
        return criterion
    return keras.saving.serialize_keras_object(criterion)


def _deserialize(config, custom_objects=None):
    if isinstance(config, str) and config in CRITERIA:
        return config
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def _scores(criterion, effective, gradients):
    """float32 scores `|criterion(e, g)|`, 0 where `e` is masked."""
    function = CRITERIA[criterion] if isinstance(criterion, str) else criterion
    scores = ops.abs(ops.cast(function(effective, gradients), "float32"))
    if tuple(scores.shape) != tuple(effective.shape):
        raise ValueError(
            f"`criterion` must return one score per weight: for a weight of "
            f"shape {tuple(effective.shape)} it returned shape "
            f"{tuple(scores.shape)}. Received: criterion={criterion!r}"
        )
    # Before any gradient is accumulated, magnitudes decide.
    if criterion == "taylor" and not bool(ops.any(scores > 0)):
        scores = ops.abs(ops.cast(effective, "float32"))
    return scores
