"""The model-level mask update of `global_pruning=True` wrappers."""

from keras import ops

from keras_pruning import masks as masks_lib
from keras_pruning.allocation import erk_masks

_NO_BOUNDS = (0.0, 1.0)


def _same(wrappers, describe, what):
    values = {describe(w) for w in wrappers}
    if len(values) > 1:
        raise ValueError(
            f"Layers pruned with global_pruning=True are ranked together, so "
            f"they must share {what}. Received: "
            + ", ".join(f"{w.name}: {describe(w)}" for w in wrappers)
        )


class GlobalMasks:
    """Sets the masks of all `global_pruning` wrappers of a model at once.

    Behaves as one wrapper for `UpdatePruningStep`: it has the wrappers'
    common `pruning_schedule`, `built`, and `update_masks(sparsity)`.
    """

    def __init__(self, wrappers):
        _same(wrappers, lambda w: repr(w.pruning_schedule.get_config()), "a schedule")
        _same(wrappers, lambda w: w.allocation, "an `allocation`")
        _same(wrappers, lambda w: (w.block_size, w.block_pooling_type), "blocks")
        self.wrappers = list(wrappers)
        first = self.wrappers[0]
        self.pruning_schedule = first.pruning_schedule
        self.allocation = first.allocation
        self.block_size = first.block_size
        self.block_pooling_type = first.block_pooling_type

    @property
    def built(self):
        return all(w.built for w in self.wrappers)

    def update_masks(self, sparsity):
        """Masks every wrapper's weights so that together they are at
        `sparsity` (see `keras_pruning.allocation`)."""
        scores, bounds, owners = [], [], []
        for wrapper in self.wrappers:
            found = wrapper._scores()
            scores += found
            bounds += [wrapper.sparsity_bounds or _NO_BOUNDS] * len(found)
            owners += [wrapper] * len(found)
        if self.allocation == "magnitude":
            new_masks, threshold = masks_lib.global_magnitude_masks(
                scores,
                sparsity,
                self.block_size,
                self.block_pooling_type,
                bounds=None if all(b == _NO_BOUNDS for b in bounds) else bounds,
            )
            # One value per variable: JAX's trainer donates each variable's
            # buffer, and two variables must not share one.
            thresholds = [
                ops.convert_to_tensor(float(threshold), "float32") for _ in scores
            ]
        else:
            new_masks, thresholds = erk_masks(
                scores, sparsity, self.block_size, self.block_pooling_type, bounds
            )
        for wrapper in self.wrappers:
            mine = [i for i, owner in enumerate(owners) if owner is wrapper]
            wrapper._set_masks(
                [new_masks[i] for i in mine], [thresholds[i] for i in mine]
            )
