"""Group scores and channel selection, shared by one-shot and gradual pruning."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_pruning.masks import num_kept
from keras_pruning.structured._graph import layer_weights
from keras_pruning.structured.importance import CRITERIA


def resolve_importance(importance):
    """`(score function, needs gradients, reads gammas)` for a name or callable."""
    if isinstance(importance, str) and importance in CRITERIA:
        return CRITERIA[importance]
    if callable(importance) and not isinstance(importance, str):
        return importance, False, False
    raise ValueError(
        f"`importance` must be one of {sorted(CRITERIA)} or a function "
        "`(weights, gradients) -> scores`. "
        f"Received: importance={importance!r}"
    )


def group_scores(analysis, importance, values=None, gradients=None):
    """`{group id: float64 scores over its channels}` for the prunable groups.

    `values` maps `id(variable)` to the tensor to score instead (the
    effective weights of a masked model); `gradients` maps `id(variable)` to
    `dL/dw` for criteria that need it.
    """
    score_fn, needs_gradients, reads_gammas = resolve_importance(importance)
    prunable = {g.id: g for g in analysis.groups if g.prunable}
    totals = {g: np.zeros(group.size) for g, group in prunable.items()}
    scored = set()
    for layer, maps in analysis.calls:
        for variable, axes, _ in layer_weights(layer):
            is_gamma = isinstance(layer, keras.layers.BatchNormalization) and (
                variable is getattr(layer, "gamma", None)
            )
            if is_gamma != reads_gammas or (not reads_gammas and variable.ndim < 2):
                continue
            value = (values or {}).get(id(variable), variable)
            gradient = gradients[id(variable)] if needs_gradients else None
            for axis, key in axes.items():
                groups, channels = analysis.group_positions(maps[key])
                for g in np.unique(groups):
                    g = int(g)
                    if g not in prunable:
                        continue
                    where = np.nonzero(groups == g)[0]
                    rows = score_fn(
                        _rows(value, where, axis),
                        None if gradient is None else _rows(gradient, where, axis),
                    )
                    rows = ops.convert_to_numpy(ops.cast(rows, "float32"))
                    if rows.shape != (len(where),):
                        raise ValueError(
                            "An importance function must return one score per "
                            f"row of its (rows, k) input: expected shape "
                            f"({len(where)},). Received: shape={rows.shape}"
                        )
                    totals[g] += np.bincount(
                        channels[where], weights=rows, minlength=prunable[g].size
                    )
                    scored.add(g)
    missing = [prunable[g].producers for g in prunable if g not in scored]
    if missing:
        raise ValueError(
            f"importance={importance!r} finds no weights to score in the channel "
            f"groups made by {missing[:5]}"
            + (" (they have no BatchNormalization)" if reads_gammas else "")
            + ". Use importance='l2', or `ignore` those layers."
        )
    return totals


def _rows(value, where, axis):
    """The slices of `value` at positions `where` along `axis`, one per row."""
    taken = ops.take(ops.cast(value, "float32"), where, axis=axis)
    return ops.reshape(ops.moveaxis(taken, axis, 0), (len(where), -1))


def kept_count(size, sparsity, round_to):
    """Channels kept of `size`: `num_kept(size, sparsity)` rounded to the
    nearest multiple of `round_to`, at least `round_to`, at most `size`."""
    count = num_kept(size, sparsity)
    if round_to > 1:
        count = max(round_to, round_to * int(round(count / round_to)))
    return min(size, count)


def _top(scores, count, kept=None):
    """The `count` best of `scores`, as a boolean vector. Ties go to the
    channels `kept` (the current ones, so that a pruned channel stays pruned
    while sparsity does not decrease), then to the lower index."""
    preferred = np.zeros(len(scores), bool) if kept is None else np.asarray(kept)
    order = np.lexsort((np.arange(len(scores)), ~preferred, -np.asarray(scores)))
    keep = np.zeros(len(scores), dtype=bool)
    keep[order[:count]] = True
    return keep


def choose_channels(scores, sizes, sparsity, round_to=1, global_pruning=False):
    """`{group id: boolean keep vector}` for scored groups.

    Per group, the `kept_count` highest-scoring channels stay. With
    `global_pruning`, each group's scores are divided by their mean and one
    threshold is set over all channels, so that `num_kept(total, sparsity)`
    channels stay overall; each group keeps at least `round_to` channels
    (one by default), and its count is then rounded to `round_to`.
    """
    if not global_pruning:
        return {
            g: _top(s, kept_count(sizes[g], sparsity, round_to))
            for g, s in scores.items()
        }
    normalized = {
        g: s / s.mean() if s.mean() > 0 else np.ones_like(s) for g, s in scores.items()
    }
    total = sum(sizes[g] for g in scores)
    remove = total - num_kept(total, sparsity)
    ranked = sorted(
        (value, g, c) for g, s in normalized.items() for c, value in enumerate(s)
    )
    counts = {g: sizes[g] for g in scores}
    floor = max(round_to, 1)
    for _, g, _ in ranked:
        if remove == 0:
            break
        if counts[g] > floor:
            counts[g] -= 1
            remove -= 1
    return {
        g: _top(scores[g], min(sizes[g], max(floor, round_to * round(n / round_to))))
        for g, n in counts.items()
    }


def check_sparsity(sparsity, argument="sparsity"):
    if (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, numbers.Real)
        or math.isnan(sparsity)
        or not 0.0 <= sparsity < 1.0
    ):
        raise ValueError(
            f"`{argument}` must be a float in [0, 1): the fraction of each "
            f"group's channels to remove. Received: {argument}={sparsity!r}"
        )
    return float(sparsity)


def check_round_to(round_to):
    if (
        isinstance(round_to, bool)
        or not isinstance(round_to, numbers.Integral)
        or round_to < 1
    ):
        raise ValueError(
            "`round_to` must be a positive integer (kept channel counts become "
            f"multiples of it). Received: round_to={round_to!r}"
        )
    return int(round_to)
