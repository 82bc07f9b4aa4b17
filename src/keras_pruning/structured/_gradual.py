"""Gradual channel pruning: group masks driven by the schedules and callback.

`prune_low_magnitude(model, granularity="channel")` wraps every layer holding
weights of a prunable group. At each step a group's schedule selects, its
channels are ranked by the `l2` score of the effective weights and the
lowest are masked in every weight they index (kernel slices of the layers
that make and read them, bias, BatchNormalization gamma and beta), so the
masked model computes what the smaller model will. A masked channel scores
zero, so it stays masked while sparsity grows. `strip_pruning(model,
shrink=True)` then cuts the masked channels out.
"""

import numpy as np
from keras import ops

from keras_pruning import masks as masks_lib
from keras_pruning._trainer import sync_trainer_state
from keras_pruning.structured import _channels
from keras_pruning.structured._graph import Analysis, layer_weights, maskable_weights
from keras_pruning.structured._surgery import shrink
from keras_pruning.wrapper import _check_pruned_at_zero


def _side(key):
    return "out" if key == "out" else "in"


def _pruned_groups(analysis, is_pruned_side):
    """Group ids whose every masked weight has its side pruned."""
    ok = {g.id: g.prunable for g in analysis.groups}
    for layer, maps in analysis.calls:
        for _, axes, _ in maskable_weights(layer):
            for key in axes.values():
                pruned = is_pruned_side(layer, _side(key))
                for g in np.unique(analysis.group_positions(maps[key])[0]):
                    ok[int(g)] = ok[int(g)] and pruned
    return sorted(g for g, good in ok.items() if good)


def channel_wrappers(model, select, ignore):
    """`{id(layer): (schedule, channel sides)}` for the layers to wrap.

    A prunable group is pruned when `select` gives a schedule for each layer
    that makes its channels; the group takes its first producer's schedule.
    """
    analysis = Analysis(model, ignore)
    schedule_of = {}
    for group in analysis.groups:
        if group.prunable:
            producers = analysis.producer_layers[group.id]
            schedules = [select(layer) for layer in producers]
            if all(s is not None for s in schedules):
                schedule_of[group.id] = schedules[0]
    plan = {}
    for layer, maps in analysis.calls:
        sides, schedule = [], None
        for _, axes, _ in maskable_weights(layer):
            for key in axes.values():
                groups = np.unique(analysis.group_positions(maps[key])[0])
                for g in (int(g) for g in groups if int(g) in schedule_of):
                    schedule = schedule or schedule_of[g]
                    if _side(key) not in sides:
                        sides.append(_side(key))
        if sides:
            plan[id(layer)] = (schedule, tuple(sorted(sides)))
    return plan


class ChannelMasks:
    """The model-level mask update for channel-granularity wrappers."""

    def __init__(self, model, wrappers):
        self.model = model
        self.wrapper_of = {id(w.layer): w for w in wrappers}
        self.analysis = Analysis(model, lenient=True)

        def is_pruned_side(layer, side):
            wrapper = self.wrapper_of.get(id(layer))
            return wrapper is not None and side in wrapper.channel_sides

        self.groups = _pruned_groups(self.analysis, is_pruned_side)
        self.producer_of = {  # the wrapper whose schedule and mask a group follows
            g: self.wrapper_of[id(self.analysis.producer_layers[g][0])]
            for g in self.groups
        }

    def _effective(self):
        return {
            id(w): masks_lib.apply_mask(w, m)
            for wrapper in self.wrapper_of.values()
            for w, m in zip(wrapper.prunable_weights, wrapper.masks, strict=True)
        }

    def current_keep(self):
        """`{group: keep vector}` read from the producers' masks."""
        keep = {}
        for g in self.groups:
            producer = self.producer_of[g]
            mask = dict(
                zip(map(id, producer.prunable_weights), producer.masks, strict=True)
            )
            for variable, axes, _ in layer_weights(producer.layer):
                out_axes = [a for a, key in axes.items() if key == "out"]
                if id(variable) in mask and out_axes and variable.ndim > 1:
                    m = ops.convert_to_numpy(mask[id(variable)])
                    m = np.moveaxis(m, out_axes[0], 0).reshape(m.shape[out_axes[0]], -1)
                    keep[g] = m.any(axis=1)
                    break
            else:
                raise ValueError(
                    f"Layer {producer.layer.name!r} makes pruned channels but has "
                    "no kernel to read its channel mask from."
                )
        return keep

    def update(self, step):
        """Re-ranks the groups whose schedule selects `step`; True if any."""
        due = {}
        for g in self.groups:
            should_prune, sparsity = self.producer_of[g].pruning_schedule(step)
            if should_prune:
                due[g] = float(sparsity)
        if not due:
            return False
        sync_trainer_state(self.model)
        _check_pruned_at_zero(list(self.wrapper_of.values()))
        for wrapper in self.wrapper_of.values():
            wrapper._check_finite()
        effective = self._effective()
        scores = _channels.group_scores(self.analysis, "l2", values=effective)
        keep = self.current_keep()
        for g, sparsity in due.items():
            count = _channels.kept_count(self.analysis.groups[g].size, sparsity, 1)
            keep[g] = _channels._top(scores[g], count, kept=keep[g])
        self._write(keep)
        return True

    def _write(self, keep):
        for layer, maps in self.analysis.calls:
            wrapper = self.wrapper_of.get(id(layer))
            if wrapper is None:
                continue
            axes_of = {id(v): axes for v, axes, _ in layer_weights(layer)}
            for weight, mask in zip(
                wrapper.prunable_weights, wrapper.masks, strict=True
            ):
                new_mask = ops.ones(weight.shape, "bool")
                for axis, key in axes_of[id(weight)].items():
                    kept = self.analysis.keep_positions(maps[key], keep)
                    shape = [1] * weight.ndim
                    shape[axis] = len(kept)
                    new_mask = ops.logical_and(new_mask, ops.reshape(kept, shape))
                mask.assign(new_mask)
                weight.assign(masks_lib.apply_mask(weight, new_mask))


def shrink_masked(model, wrappers):
    """A new model without the channels `wrappers`' masks remove; the masked
    weights must already be written into the wrapped layers."""
    masks = ChannelMasks(model, wrappers)
    return shrink(model, masks.analysis, masks.current_keep())
