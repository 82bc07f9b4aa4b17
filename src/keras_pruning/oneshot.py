"""One-shot pruning: a plain model at exactly the requested sparsity, now.

For the prune -> fine-tune workflow, and to measure what a sparsity costs in
accuracy, size and speed before spending any training on it.
"""

import keras

from keras_pruning import registry
from keras_pruning.allocation import _NO_BOUNDS, _check_allocation, _shared_masks
from keras_pruning.masks import (
    _check_block_size,
    apply_mask,
    block_magnitude_mask,
    m_by_n_mask,
)
from keras_pruning.prune import (
    _check_built,
    _check_global_args,
    _check_selected_names,
    _clone_uncompiled,
    _is_graph_model,
    _nested_bounds,
    _selection,
    pruning_wrappers,
)
from keras_pruning.schedules import _check_sparsity
from keras_pruning.wrapper import (
    _channel_axis,
    _check_ranks,
    _validate_m_by_n,
    _validate_pooling_type,
)

__all__ = ("prune_to_sparsity",)


def _selected_layers(model, copy, select):
    """`(layer, weights)` pairs: each layer of `model` that `select` picks (all
    if None) with the prunable variables of its twin in `copy`, walking nested
    models in step; naming a nested model picks all of it. Pass `model` as
    `copy` for its own variables."""
    found, seen = [], set()

    def walk(original, cloned, select):
        for layer, twin in zip(original.layers, cloned.layers, strict=True):
            chosen = select is None or select(layer) is not None
            if isinstance(layer, keras.Model):
                walk(layer, twin, None if chosen else select)
            elif not chosen or id(layer) in seen:
                continue
            elif registry.is_prunable(layer):  # first, as in prune_low_magnitude
                seen.add(id(layer))
                found.append((layer, registry.get_prunable_weights(twin)))
            elif not registry.is_passthrough(layer):
                raise ValueError(registry._unsupported_message(layer))

    walk(model, copy, select)
    return found


def prune_to_sparsity(
    model,
    sparsity=None,
    *,
    global_pruning=False,
    layers=None,
    block_size=(1, 1),
    block_pooling_type="avg",
    sparsity_m_by_n=None,
    allocation="magnitude",
    sparsity_bounds=None,
):
    """Returns a pruned copy of `model`: plain layers, zeros in place, no wrappers.

    Every prunable weight of the selected layers (see `prune_low_magnitude`
    for which weights of which layers) keeps its `k = max(round(n * (1 - s)), 1)`
    largest magnitudes (or, with a `block_size`, blocks). With
    `global_pruning=True` they are ranked together, with one threshold: the
    overall sparsity is exactly `sparsity` and layers end at different
    sparsities. `model` itself is not changed.

    Args:
        model: a built Sequential or functional `keras.Model`.
        sparsity: the fraction of weights (or blocks) to prune, in [0, 1).
            Required, except with `sparsity_m_by_n`, which sets it.
        global_pruning: rank all selected weights together. Defaults to `False`
            (each weight tensor at `sparsity`).
        layers: which layers to prune, as in `prune_low_magnitude`: a name, a
            class, a list of them, or a predicate. Defaults to `None` (all).
        block_size: `(r, c)` blocks, as in `PruneLowMagnitude`: `(16, 1)` for
            LiteRT's int8 sparse fully connected kernels. Defaults to `(1, 1)`.
        block_pooling_type: `"avg"` or `"max"`, how blocks are scored.
            Defaults to `"avg"`.
        sparsity_m_by_n: `(m, n)`: prune the `m` smallest of every `n`
            consecutive weights along the input channels, as in
            `PruneLowMagnitude`; leave `sparsity` unset. Defaults to `None`.
        allocation: with `global_pruning`, `"magnitude"` (one threshold) or
            `"erk"` (per-layer targets from the shapes), as in
            `prune_low_magnitude`. Defaults to `"magnitude"`.
        sparsity_bounds: with `global_pruning`, `(floor, cap)` for every
            layer or a dict from layer names or classes to such pairs, as in
            `prune_low_magnitude`. Defaults to `None`.

    Returns:
        A new, uncompiled `keras.Model` with the same architecture.

    Raises:
        TypeError, ValueError: for invalid arguments, a subclassed or already
            pruned model, or a selected layer that cannot be pruned (with
            m-by-n: any layer but Dense, EinsumDense and Conv1D/2D/3D).

    Examples:
        >>> sparse = prune_to_sparsity(model, 0.8, global_pruning=True)
        >>> sparse = prune_to_sparsity(model, 0.8, block_size=(16, 1))
        >>> sparse = prune_to_sparsity(model, sparsity_m_by_n=(2, 4))
        >>> sparse.compile(...); sparse.fit(...)   # fine-tune, then export
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    bounds_of = _check_global_args(
        None, "weight", "magnitude", global_pruning, sparsity_bounds
    )
    allocation = _check_allocation(allocation)
    if allocation != "magnitude" and not global_pruning:
        raise ValueError(
            "`allocation` shares a model-wide sparsity among layers: pass "
            f"`global_pruning=True` with it. Received: allocation={allocation!r}, "
            f"global_pruning={global_pruning}"
        )
    block_size = _check_block_size(block_size)
    pooling = _validate_pooling_type(block_pooling_type)
    sparsity_m_by_n = _validate_m_by_n(sparsity_m_by_n)
    if sparsity_m_by_n is None:
        sparsity = _check_sparsity("sparsity", sparsity)
    elif sparsity is not None or global_pruning:
        raise ValueError(
            "`sparsity_m_by_n` sets the sparsity of every group of n weights to "
            "m / n: pass neither `sparsity` nor `global_pruning=True` with it. "
            f"Received: sparsity={sparsity!r}, global_pruning={global_pruning}, "
            f"sparsity_m_by_n={sparsity_m_by_n}"
        )
    if not _is_graph_model(model):
        raise ValueError(
            f"Model {model.name!r} of class {type(model).__name__} is a subclassed "
            "model: it cannot be copied layer by layer. Received: "
            f"model={model.name!r}"
        )
    if pruning_wrappers(model):
        raise ValueError(
            f"Model {model.name!r} holds PruneLowMagnitude layers: call "
            "`strip_pruning(model)` first."
        )
    _check_built(model)
    select = _selection(layers, None)
    _check_selected_names(model, layers, sparsity_bounds)
    copy = _clone_uncompiled(model)
    copy.set_weights(model.get_weights())
    selected = _selected_layers(model, copy, select)
    bounds_of = _nested_bounds(model, bounds_of)
    weights, axes, bounds = [], [], []
    for layer, group in selected:
        axis = _channel_axis(layer, sparsity_m_by_n, block_size)
        _check_ranks(layer, group, block_size, sparsity_m_by_n)
        weights += group
        axes += [axis] * len(group)
        bounds += [bounds_of(layer) or _NO_BOUNDS] * len(group)
    if not weights:
        raise ValueError(
            f"No prunable weights in the selected layers of {model.name!r}. "
            f"Received: layers={layers!r}"
        )
    values = [w.value for w in weights]
    if sparsity_m_by_n is not None:
        masks = [
            m_by_n_mask(v, *sparsity_m_by_n, axis=axis)[0]
            for v, axis in zip(values, axes, strict=True)
        ]
    elif global_pruning:
        masks, _ = _shared_masks(
            values, sparsity, allocation, block_size, pooling, bounds
        )
    else:
        masks = [
            block_magnitude_mask(v, sparsity, block_size, pooling)[0] for v in values
        ]
    for weight, mask in zip(weights, masks, strict=True):
        weight.assign(apply_mask(weight.value, mask))
    return copy
