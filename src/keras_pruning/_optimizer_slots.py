"""Optimizer moments of pruned weights, cleaned after each mask update.

A pruned weight's gradient is 0, so the optimizer's moment estimates there
only decay (`m <- beta_1 * m`): after a few hundred steps they are subnormal
floats, which CPUs process many times slower unless they flush them to zero
(TensorFlow's and XLA's kernels do, PyTorch's do not: the benchmark MLP's
eager step went from 3.6 to 9.4 ms over 1,600 steps of pruning with Adam,
and section 6 of `benchmarks/run.py` from 1.651x to 1.450x dense once
these moments were cleared). Kept weights
whose gradient stays 0 (inputs of a unit that no longer fires) decay the
same way. After each mask update, the moments of every pruned weight are
set to 0 where the mask prunes and where they are subnormal, as TensorFlow
and XLA would compute them. For the optimizers below, which update each
weight entry from its own moments only, moments at pruned positions move
nothing that is ever read.
"""

import keras
from keras import ops
from keras.backend import standardize_dtype

from keras_pruning import masks as masks_lib

# Zero-initialized moving averages of the gradient (or of its square or
# magnitude), per weight entry: with a zero gradient and zero moments, the
# update of these optimizers is 0.
_MOMENT_SLOTS = {
    keras.optimizers.Adam: ("momentum", "velocity", "velocity_hat"),  # and AdamW
    keras.optimizers.Nadam: ("momentum", "velocity"),
    keras.optimizers.Adamax: ("momentum", "norm"),
    keras.optimizers.Lion: ("momentum",),
    # Centered: `velocity - average_gradient**2` must stay >= 0, so both go.
    keras.optimizers.RMSprop: ("velocity", "momentum", "average_gradient"),
    keras.optimizers.SGD: ("momentum",),
}

_SMALLEST_NORMAL = {
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float32": 2.0**-126,
    "float64": 2.0**-1022,
}


def clear_pruned_moments(optimizer, wrappers):
    """Sets the moment slots of `optimizer` (one of `_MOMENT_SLOTS`, or the
    inner optimizer of a `LossScaleOptimizer`) to 0 where the wrappers' masks
    prune, and where they are subnormal. A slot belongs to a weight when
    Keras named it after the weight (`{path with _ for /}_{slot}`) and has
    the weight's shape."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    suffixes = next(
        (s for kind, s in _MOMENT_SLOTS.items() if isinstance(optimizer, kind)), ()
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
