"""The model-level mask update of `global_pruning=True` wrappers."""

from keras_pruning.allocation import _NO_BOUNDS, _shared_masks


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
        scores = [wrapper._scores() for wrapper in self.wrappers]
        bounds = [
            wrapper.sparsity_bounds or _NO_BOUNDS
            for wrapper, found in zip(self.wrappers, scores, strict=True)
            for _ in found
        ]
        new_masks, thresholds = _shared_masks(
            [s for found in scores for s in found],
            sparsity,
            self.allocation,
            self.block_size,
            self.block_pooling_type,
            bounds,
        )
        start = 0
        for wrapper, found in zip(self.wrappers, scores, strict=True):
            end = start + len(found)
            wrapper._set_masks(new_masks[start:end], thresholds[start:end])
            start = end
