"""`prune_low_magnitude` and `strip_pruning`: wrap and unwrap layers of a model."""

import keras

from keras_pruning import registry
from keras_pruning.schedules import ConstantSparsity
from keras_pruning.wrapper import PruneLowMagnitude

__all__ = ("prune_low_magnitude", "strip_pruning", "pruning_wrappers")


def _is_graph_model(model):
    """True for Sequential and functional models, the ones that can be cloned."""
    if isinstance(model, keras.Sequential):
        return True
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _subclassed_model_error(model):
    return ValueError(
        f"Model {model.name!r} of class {type(model).__name__} is a subclassed "
        "model: its layer graph is not known, so it cannot be cloned with "
        "wrapped layers. Wrap layers inside its `__init__` instead, e.g. "
        "`self.dense = keras_pruning.prune_low_magnitude(keras.layers.Dense(10))`; "
        "UpdatePruningStep finds such wrappers. Received: "
        f"to_prune={model.name!r}"
    )


def pruning_wrappers(model):
    """Returns every `PruneLowMagnitude` layer in `model`, nested ones included.

    Works for Sequential, functional and subclassed models, in a stable order.
    """
    if isinstance(model, PruneLowMagnitude):
        return [model]
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model or keras.layers.Layer. "
            f"Received: model={model!r}"
        )
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PruneLowMagnitude) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="avg",
    pruning_policy=None,
    sparsity_m_by_n=None,
    **kwargs,
):
    """Wraps a layer, a list of layers or a model for magnitude pruning.

    For a Sequential or functional model (nested models included), every
    supported layer is wrapped in `PruneLowMagnitude`; depthwise convolutions,
    normalization layers and weightless layers stay as they are, and any other
    layer with trainable weights raises `ValueError`. The returned model shares
    its layers, and so its weights, with `to_prune` (as in TFMOT): pruning
    zeroes weights of the original model too. Compile it again before `fit`,
    and train with `UpdatePruningStep`.

    Args:
        to_prune: a `keras.layers.Layer`, a list of layers, or a Sequential or
            functional `keras.Model`.
        pruning_schedule: a `PruningSchedule`. Defaults to a new
            `ConstantSparsity(0.5, 0)` for each call.
        block_size: `(1, 1)` (block sparsity is not implemented yet).
        block_pooling_type: `"avg"` or `"max"`. Defaults to `"avg"`.
        pruning_policy: `None` (policies are not implemented yet).
        sparsity_m_by_n: `None` (m-by-n sparsity is not implemented yet).
        **kwargs: layer arguments (such as `name`) for the wrapper, when
            `to_prune` is a single layer.

    Returns:
        A `PruneLowMagnitude` layer, a list of them, or a new model.

    Raises:
        TypeError: if `to_prune` is not a Keras layer, list of layers or model.
        ValueError: for a subclassed model, an unsupported layer, a layer or
            model that is already pruned, or invalid arguments.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> pruned = prune_low_magnitude(model, ConstantSparsity(0.5, 0, frequency=1))
        >>> type(pruned.layers[0]).__name__
        'PruneLowMagnitude'
    """
    if pruning_policy is not None:
        raise NotImplementedError(
            "Pruning policies are not implemented yet. "
            f"Received: pruning_policy={pruning_policy!r}"
        )
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, 0)
    wrapper_args = dict(
        pruning_schedule=pruning_schedule,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
    )
    if isinstance(to_prune, (list, tuple)):
        if not to_prune:
            raise ValueError("`to_prune` is an empty list. Received: to_prune=[]")
        return [
            prune_low_magnitude(layer, **wrapper_args, **kwargs) for layer in to_prune
        ]
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                "Extra keyword arguments apply to a single wrapped layer, not to "
                f"a model. Received: {sorted(kwargs)}"
            )
        return _prune_model(to_prune, wrapper_args)
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, **wrapper_args, **kwargs)
    raise TypeError(
        "`to_prune` must be a keras.layers.Layer, a list of layers, or a "
        "Sequential or functional keras.Model. Received: "
        f"to_prune={to_prune!r} (of type {type(to_prune).__name__})"
    )


def _prune_model(model, wrapper_args):
    if not _is_graph_model(model):
        raise _subclassed_model_error(model)
    already = pruning_wrappers(model)
    if already:
        raise ValueError(
            f"Model {model.name!r} is already pruned: it contains PruneLowMagnitude "
            f"layers ({', '.join(w.name for w in already[:5])}). Call "
            "`strip_pruning(model)` first to prune it again with new settings."
        )
    clones = {}

    def wrap(layer):
        if id(layer) in clones:  # shared layers are wrapped once
            return clones[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            return layer  # a graph operation, such as an Embedding's mask op
        if isinstance(layer, keras.Model):
            new = _prune_model(layer, wrapper_args)
        elif registry.is_prunable(layer):
            new = PruneLowMagnitude(layer, **wrapper_args)
        elif registry.is_passthrough(layer):
            new = layer
        else:
            raise ValueError(registry._unsupported_message(layer))
        clones[id(layer)] = new
        return new

    return keras.models.clone_model(model, clone_function=wrap)


def strip_pruning(model):
    """Removes pruning wrappers, writing `w * mask` into the wrapped weights.

    Args:
        model: a Sequential or functional model (nested models included), or a
            single `PruneLowMagnitude` layer.

    Returns:
        A model (or layer) of plain Keras layers with sparse weights, sharing
        its layers with `model`. It saves, loads and converts like any model.
        It is not compiled (compile it to `evaluate`), so its `.keras` file
        holds no optimizer state.

    Raises:
        TypeError: if `model` is not a Keras model or layer.
        ValueError: for a subclassed model holding wrappers.

    Examples:
        >>> stripped = strip_pruning(pruned)
        >>> any(isinstance(l, PruneLowMagnitude) for l in stripped.layers)
        False
    """
    if isinstance(model, PruneLowMagnitude):
        return model.strip()
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model or a PruneLowMagnitude layer. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if not isinstance(model, keras.Model):
        return model
    if not _is_graph_model(model):
        if pruning_wrappers(model):
            raise ValueError(
                f"Model {model.name!r} of class {type(model).__name__} is a "
                "subclassed model holding PruneLowMagnitude layers; it cannot be "
                "cloned without them. Strip each wrapper instead: "
                "`layer = wrapper.strip()`, and build the model with the "
                "returned layers."
            )
        return model
    stripped = {}

    def unwrap(layer):
        if id(layer) not in stripped:
            if isinstance(layer, PruneLowMagnitude):
                stripped[id(layer)] = layer.strip()
            elif isinstance(layer, keras.Model):
                stripped[id(layer)] = strip_pruning(layer)
            else:
                stripped[id(layer)] = layer
        return stripped[id(layer)]

    # Keras compiles a clone of a compiled model, building a fresh optimizer
    # that `save()` would store: twice the weights' bytes, for Adam, in a file
    # meant for deployment. The stripped model is left uncompiled, as TFMOT's.
    compiled = model.compiled
    model.compiled = False
    try:
        return keras.models.clone_model(model, clone_function=unwrap)
    finally:
        model.compiled = compiled
