"""One-shot pruning: a plain model at exactly the requested sparsity, now.

For the prune -> fine-tune workflow, and to measure what a sparsity costs in
accuracy, size and speed before spending any training on it.
"""

import keras

from keras_pruning import registry
from keras_pruning.masks import apply_mask, global_magnitude_masks, magnitude_mask
from keras_pruning.prune import (
    _clone_uncompiled,
    _is_graph_model,
    _selection,
    pruning_wrappers,
)
from keras_pruning.schedules import _check_sparsity

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
            elif not chosen or registry.is_passthrough(layer) or id(layer) in seen:
                continue
            elif registry.is_prunable(layer):
                seen.add(id(layer))
                found.append((layer, registry.get_prunable_weights(twin)))
            else:
                raise ValueError(registry._unsupported_message(layer))

    walk(model, copy, select)
    return found


def prune_to_sparsity(
    model,
    sparsity,
    *,
    global_pruning=False,
    layers=None,
    block_size=(1, 1),
    sparsity_m_by_n=None,
):
    """Returns a pruned copy of `model`: plain layers, zeros in place, no wrappers.

    Every prunable weight of the selected layers (see `prune_low_magnitude`
    for which weights of which layers) keeps its `k = max(round(n * (1 - s)), 1)`
    largest magnitudes. With `global_pruning=True` they are ranked together,
    with one threshold: the overall sparsity is exactly `sparsity` and layers
    end at different sparsities. `model` itself is not changed.

    Args:
        model: a built Sequential or functional `keras.Model`.
        sparsity: the fraction of weights to prune, in [0, 1).
        global_pruning: rank all selected weights together. Defaults to `False`
            (each weight tensor at `sparsity`).
        layers: which layers to prune, as in `prune_low_magnitude`: a name, a
            class, a list of them, or a predicate. Defaults to `None` (all).
        block_size: `(1, 1)` (block sparsity is not implemented yet).
        sparsity_m_by_n: `None` (m-by-n sparsity is not implemented yet).

    Returns:
        A new, uncompiled `keras.Model` with the same architecture.

    Raises:
        TypeError, ValueError: for invalid arguments, a subclassed or already
            pruned model, or a selected layer that cannot be pruned.

    Examples:
        >>> sparse = prune_to_sparsity(model, 0.8, global_pruning=True)
        >>> sparse.compile(...); sparse.fit(...)   # fine-tune, then export
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    sparsity = _check_sparsity("sparsity", sparsity)
    if not isinstance(global_pruning, bool):
        raise TypeError(
            f"`global_pruning` must be True or False. Received: global_pruning={global_pruning!r}"
        )
    if tuple(block_size) != (1, 1) or sparsity_m_by_n is not None:
        raise NotImplementedError(
            "Block and m-by-n sparsity are not implemented yet. Received: "
            f"block_size={block_size!r}, sparsity_m_by_n={sparsity_m_by_n!r}"
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
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: give it a `keras.Input` or call "
            "`model.build(input_shape)` first."
        )
    select = _selection(layers, None)
    copy = _clone_uncompiled(model)
    copy.set_weights(model.get_weights())
    weights = [w for _, group in _selected_layers(model, copy, select) for w in group]
    if not weights:
        raise ValueError(
            f"No prunable weights in the selected layers of {model.name!r}. "
            f"Received: layers={layers!r}"
        )
    if global_pruning:
        masks, _ = global_magnitude_masks([w.value for w in weights], sparsity)
    else:
        masks = [magnitude_mask(w.value, sparsity)[0] for w in weights]
    for weight, mask in zip(weights, masks, strict=True):
        weight.assign(apply_mask(weight.value, mask))
    return copy
