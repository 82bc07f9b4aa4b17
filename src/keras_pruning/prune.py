"""`prune_low_magnitude` and `strip_pruning`: wrap and unwrap layers of a model."""

import keras

from keras_pruning import registry
from keras_pruning.schedules import ConstantSparsity, PruningSchedule
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
    *,
    layers=None,
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

    For a model, `layers` or a dict `pruning_schedule` choose which layers to
    prune (without a `clone_function`); the others stay as they are, dense.
    Naming a nested model selects every layer inside it.

    Args:
        to_prune: a `keras.layers.Layer`, a list of layers, or a Sequential or
            functional `keras.Model`.
        pruning_schedule: a `PruningSchedule`; or, for a model, a dict from
            layer names or layer classes to schedules: each layer gets the
            schedule of the first key that matches it (a name equal to its
            own, or a class it is an instance of), and layers matching no key
            are not pruned. Defaults to a new `ConstantSparsity(0.5, 0)` for
            each call.
        block_size: `(r, c)`: prune `r x c` blocks of the last two axes of
            each weight as Keras stores it (`(input, output)` for Dense), as
            in `PruneLowMagnitude`; `(16, 1)` gives LiteRT's int8 sparse
            fully connected blocks. Defaults to `(1, 1)`: single weights.
        block_pooling_type: `"avg"` or `"max"` (or TFMOT's `"AVG"`/`"MAX"`),
            how blocks are scored. Defaults to `"avg"`.
        pruning_policy: `None` (policies are not implemented yet).
        sparsity_m_by_n: `(m, n)`: prune `m` of every `n` consecutive weights
            along the input channels (`(2, 4)` is 2:4), at the updates the
            schedule selects, ignoring its sparsity; for Dense, EinsumDense
            and Conv1D/2D/3D layers (select them with `layers=`). Defaults to
            `None`.
        layers: for a model, which layers to prune: a layer name, a layer
            class, a list of names and classes, or a predicate
            `layer -> bool`. Defaults to `None`: every supported layer.
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
    select = _selection(layers, pruning_schedule)
    if select is not None and not isinstance(to_prune, keras.Model):
        raise TypeError(
            "`layers` and a dict `pruning_schedule` select layers of a model; "
            f"`to_prune` is a {type(to_prune).__name__}. Received: "
            f"layers={layers!r}, pruning_schedule={pruning_schedule!r}"
        )
    if pruning_schedule is None or isinstance(pruning_schedule, dict):
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
        return _prune_model(to_prune, wrapper_args, select)
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(to_prune, **wrapper_args, **kwargs)
    raise TypeError(
        "`to_prune` must be a keras.layers.Layer, a list of layers, or a "
        "Sequential or functional keras.Model. Received: "
        f"to_prune={to_prune!r} (of type {type(to_prune).__name__})"
    )


def _layer_matcher(key, argument):
    """A predicate for one name or layer class; TypeError for anything else."""
    if isinstance(key, str):
        return lambda layer: layer.name == key
    if isinstance(key, type) and issubclass(key, keras.layers.Layer):
        return lambda layer: isinstance(layer, key)
    raise TypeError(
        f"`{argument}` must hold layer names (str) or keras.layers.Layer "
        f"subclasses. Received: {key!r} (of type {type(key).__name__})"
    )


def _selection(layers, pruning_schedule):
    """`layer -> schedule or None` (None: leave the layer dense), or None when
    every supported layer gets the one schedule."""
    if isinstance(pruning_schedule, dict):
        if layers is not None:
            raise ValueError(
                "Pass either `layers` or a dict `pruning_schedule`, not both: the "
                f"dict's keys already select the layers. Received: layers={layers!r}"
            )
        if not pruning_schedule:
            raise ValueError(
                "A dict `pruning_schedule` must map at least one layer name or "
                "class to a schedule. Received: pruning_schedule={}"
            )
        rules = []
        for key, schedule in pruning_schedule.items():
            if not isinstance(schedule, PruningSchedule):
                raise TypeError(
                    "The values of a dict `pruning_schedule` must be PruningSchedule "
                    f"instances. Received: {key!r}: {schedule!r}"
                )
            rules.append((_layer_matcher(key, "pruning_schedule"), schedule))
        return lambda layer: next((s for match, s in rules if match(layer)), None)
    if layers is None:
        return None
    schedule = (
        ConstantSparsity(0.5, 0) if pruning_schedule is None else pruning_schedule
    )
    if callable(layers) and not isinstance(layers, type):
        return lambda layer: schedule if layers(layer) else None
    keys = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    if not keys:
        raise ValueError(
            "`layers` is empty: no layer would be pruned. Received: layers=[]"
        )
    matchers = [_layer_matcher(key, "layers") for key in keys]
    return lambda layer: schedule if any(m(layer) for m in matchers) else None


def _prune_model(model, wrapper_args, select=None):
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
        schedule = wrapper_args["pruning_schedule"] if select is None else select(layer)
        if isinstance(layer, keras.Model):
            if select is not None and schedule is not None:
                # Naming a nested model selects every layer inside it.
                new = _prune_model(
                    layer, {**wrapper_args, "pruning_schedule": schedule}
                )
            else:
                new = _prune_model(layer, wrapper_args, select)
        elif schedule is None:
            new = layer  # not selected: stays dense
        elif registry.is_prunable(layer):
            new = PruneLowMagnitude(
                layer, **{**wrapper_args, "pruning_schedule": schedule}
            )
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

    return _clone_uncompiled(model, clone_function=unwrap)


def _clone_uncompiled(model, clone_function=None):
    """`keras.models.clone_model`, minus the compile state.

    Keras compiles a clone of a compiled model, building a fresh optimizer that
    `save()` would store: twice the weights' bytes, for Adam, in a file meant
    for deployment. Stripped and one-shot models are left uncompiled, as
    TFMOT's stripped models are.
    """
    compiled = model.compiled
    model.compiled = False
    try:
        return keras.models.clone_model(model, clone_function=clone_function)
    finally:
        model.compiled = compiled
