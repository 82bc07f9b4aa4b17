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
the 0 that the mask update wrote.

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

_SMALLEST_NORMAL = {
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float32": 2.0**-126,
    "float64": 2.0**-1022,
}


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
    for wrapper in wrappers:
        for weight, mask in zip(wrapper.prunable_weights, wrapper.masks, strict=True):
            stem = weight.path.replace("/", "_")
            for suffix in suffixes:
                slot = slots.get(f"{stem}_{suffix}")
                if slot is not None and tuple(slot.shape) == tuple(weight.shape):
                    smallest = _SMALLEST_NORMAL.get(standardize_dtype(slot.dtype), 0.0)
                    normal = ops.abs(slot) >= smallest
                    slot.assign(
                        masks_lib.apply_mask(slot, ops.logical_and(mask, normal))
                    )
