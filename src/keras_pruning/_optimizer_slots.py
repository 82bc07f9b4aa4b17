"""Optimizer first moments of pruned weights, cleared after each mask update.

A pruned weight's gradient is 0, so a momentum there only decays
(`m <- beta_1 * m`): it keeps moving the pruned weight away from 0 for a
while, and after a few hundred steps it is a subnormal float, which CPUs
process many times slower unless they flush it to zero (TensorFlow's and
XLA's kernels do, PyTorch's do not: the benchmark MLP's eager step went from
3.6 to 9.4 ms over 1,600 steps of pruning with Adam). After each mask update,
the first moments of every pruned weight are set to 0 where the mask prunes
and where they are subnormal, as TensorFlow and XLA would compute them. With
a zero gradient and a zero first moment, the optimizers below leave a weight
entry where it is, whatever their other slots hold, so pruned weights stay at
the 0 that the mask update wrote. `holds_pruned_weights_at_zero` says when
that holds; `UpdatePruningStep(hold_pruned_weights_at_zero=True)` then
lets the training step mask gradients only (`masks._mask_gradient`).

Second moments (Adam's `velocity`) are left alone: their square root is part
of every step, and PyTorch's CPU `sqrt` of a 784x300 tensor takes 300 to
650 us where zeros (or subnormals) fill a random half or all of it, against
16 us without them.
"""

import keras
from keras import ops
from keras.backend import standardize_dtype

from keras_pruning import masks as masks_lib

# Zero-initialized moving averages of the gradient, per weight entry, that
# enter the update's numerator (RMSprop's `average_gradient`, the centered
# variant's mean, is subtracted under the square root: 0 only enlarges the
# denominator).
_FIRST_MOMENT_SLOTS = {
    keras.optimizers.Adam: ("momentum",),  # and AdamW
    keras.optimizers.Nadam: ("momentum",),
    keras.optimizers.Adamax: ("momentum",),
    keras.optimizers.Lion: ("momentum",),
    keras.optimizers.RMSprop: ("momentum", "average_gradient"),
    keras.optimizers.SGD: ("momentum",),
}

# Optimizers whose step leaves a weight entry where it is when its gradient
# and its first moments are 0 (Adagrad and Adadelta have none), matched by
# exact class (a subclass may update differently), or by the class that
# Keras's own backend implementation of it (PyTorch's) subclasses.
_HOLDING_ZEROS = frozenset(
    {
        keras.optimizers.Adam,
        keras.optimizers.AdamW,
        keras.optimizers.Nadam,
        keras.optimizers.Adamax,
        keras.optimizers.Lion,
        keras.optimizers.RMSprop,
        keras.optimizers.SGD,
        keras.optimizers.Adagrad,
        keras.optimizers.Adadelta,
    }
)


def clear_pruned_moments(optimizer, wrappers):
    """Sets the first-moment slots of `optimizer` (one of
    `_FIRST_MOMENT_SLOTS`, or the inner optimizer of a `LossScaleOptimizer`)
    to 0 where the wrappers' masks prune, and where they are subnormal. A slot
    belongs to a weight when Keras named it after the weight
    (`{path with _ for /}_{slot}`) and has the weight's shape."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    suffixes = next(
        (s for kind, s in _FIRST_MOMENT_SLOTS.items() if isinstance(optimizer, kind)),
        (),
    )
    if not suffixes or not optimizer.built:
        return
    slots = {variable.name: variable for variable in optimizer.variables}
    found, masks, smallest = [], [], []
    for wrapper in wrappers:
        for weight, mask in zip(wrapper.prunable_weights, wrapper.masks, strict=True):
            stem = weight.path.replace("/", "_")
            for suffix in suffixes:
                slot = slots.get(f"{stem}_{suffix}")
                if slot is not None and tuple(slot.shape) == tuple(weight.shape):
                    found.append(slot)
                    masks.append(ops.convert_to_tensor(mask))
                    dtype = standardize_dtype(slot.dtype)
                    smallest.append(masks_lib._SMALLEST_NORMAL.get(dtype, 0.0))
    if not found:
        return
    # One compiled call for all slots. Timed by hand on TensorFlow: 13.3 to
    # 13.8 ms against 15.2 to 15.7 ms eager for MobileNetV2, 2.2 to 2.3 ms
    # against 1.9 ms for the benchmark MLP; 0.07 to 0.19 ms on JAX.
    slot_values = [ops.convert_to_tensor(slot) for slot in found]
    cleared = masks_lib._compiled(_cleared)(slot_values, masks, smallest)
    for slot, value in zip(found, cleared, strict=True):
        slot.assign(value)


def _cleared(slots, masks, smallest):
    """Each slot with 0 where its mask prunes and where `|slot| < smallest`."""
    return [
        masks_lib.apply_mask(slot, ops.logical_and(mask, ops.abs(slot) >= least))
        for slot, mask, least in zip(slots, masks, smallest, strict=True)
    ]


def _zero_keeping(regularizer):
    """Whether `regularizer`'s gradient is 0 at a weight of 0 on every
    backend: none, or L2 (JAX's gradient of `|w|` at 0 is 1, so not L1)."""
    return regularizer is None or (
        type(regularizer) in (keras.regularizers.L2, keras.regularizers.L1L2)
        and not getattr(regularizer, "l1", 0.0)
    )


def holds_pruned_weights_at_zero(optimizer, weights):
    """Whether `optimizer` leaves the pruned entries of `weights` at exactly 0
    while their gradients are 0 and `clear_pruned_moments` runs after each
    mask update.

    True for the exact classes of `_HOLDING_ZEROS` (or a `LossScaleOptimizer`
    around one), without an exponential moving average of the weights
    (`use_ema`, which writes the average into them) or gradient accumulation
    (sums from before a mask update are applied after it), and for weights
    that nothing else moves: no constraint, no regularizer whose gradient at
    0 may not be 0 (only L2 has 0 there on every backend), no two sharing a path
    (they would share the slot names `clear_pruned_moments` looks up). False
    otherwise: `None`, Ftrl (its weights follow an accumulator), Muon (it
    mixes the entries of an update), other optimizers.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    kind = type(optimizer)
    classes = (
        kind.__mro__ if kind.__module__.startswith("keras.src.backend.") else [kind]
    )
    paths = [w.path for w in weights]
    return (
        any(c in _HOLDING_ZEROS for c in classes)
        and not getattr(optimizer, "use_ema", False)
        and not getattr(optimizer, "gradient_accumulation_steps", None)
        and len(set(paths)) == len(paths)
        and all(
            getattr(w, "constraint", None) is None
            and _zero_keeping(getattr(w, "regularizer", None))
            for w in weights
        )
    )
