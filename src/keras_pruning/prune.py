"""`prune_low_magnitude` and `strip_pruning`: wrap and unwrap layers of a model."""

import keras

from keras_pruning import registry
from keras_pruning.allocation import _check_bounds
from keras_pruning.policy import PruningPolicy
from keras_pruning.schedules import ConstantSparsity, PruningSchedule
from keras_pruning.wrapper import PruneLowMagnitude, _check_channel_settings

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
    granularity="weight",
    ignore=(),
    criterion="magnitude",
    global_pruning=False,
    allocation="magnitude",
    sparsity_bounds=None,
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
    Naming a nested model selects every layer inside it. A `pruning_policy`
    first checks the whole model, then narrows the choice further: a layer is
    wrapped only if it is selected and the policy allows it.

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
        pruning_policy: for a model, a `PruningPolicy` such as
            `PruneForLatencyOnXNNPack()`: its `ensure_model_supports_pruning`
            runs first, and only layers it `allow_pruning`s are wrapped.
            Defaults to `None` (no policy).
        sparsity_m_by_n: `(m, n)`: prune `m` of every `n` consecutive weights
            along the input channels (`(2, 4)` is 2:4), at the updates the
            schedule selects, ignoring its sparsity; for Dense, EinsumDense
            and Conv1D/2D/3D layers (select them with `layers=`). Defaults to
            `None`.
        layers: for a model, which layers to prune: a layer name, a layer
            class, a list of names and classes, or a predicate
            `layer -> bool`. A nested model's name selects every layer in
            it; a predicate is asked about single layers only. Defaults to
            `None`: every supported layer.
        granularity: `"weight"` prunes single weights by magnitude.
            `"channel"` (for a model) prunes whole channels: the schedule's
            sparsity is the fraction of each channel group's channels that
            is masked, in every weight the channels touch (see
            `keras_pruning.structured`); with `layers` or a dict schedule, a
            group is pruned when every layer making its channels is
            selected. `strip_pruning(model, shrink=True)` then returns the
            smaller model. Defaults to `"weight"`.
        ignore: with `granularity="channel"`, layer names or classes whose
            channels are never cut (for layers the channel analysis cannot
            trace). Defaults to `()`.
        criterion: which weights go: `"magnitude"` (lowest `|w|`),
            `"taylor"` (lowest `|w * g|`, `g` the loss gradient summed
            between mask updates), or your function `(weights, gradients) ->
            scores` (see `keras_pruning.criteria`). Defaults to
            `"magnitude"`.
        global_pruning: rank the weights of all pruned layers together: the
            schedule's sparsity is their overall sparsity, and layers end at
            different sparsities. Takes one schedule (not a dict; choose
            layers with `layers`). Defaults to `False`: every weight at the
            schedule's sparsity.
        allocation: with `global_pruning`, how the overall sparsity is
            shared: `"magnitude"` (one threshold on the scores) or `"erk"`
            (per-layer targets from the shapes, Erdős–Rényi-Kernel as in
            RigL: small layers stay denser). Defaults to `"magnitude"`.
        sparsity_bounds: with `global_pruning`, `(floor, cap)` for every
            layer, or a dict from layer names or classes to such pairs (the
            first matching key applies; a nested model's name bounds the
            layers in it; other layers are unbounded): the
            least and most sparsity a layer may end with. When bounds cannot
            meet the schedule's sparsity, the bounds win. Defaults to `None`.
        **kwargs: layer arguments (such as `name`) for the wrapper, when
            `to_prune` is a single layer.

    Returns:
        A `PruneLowMagnitude` layer, a list of them, or a new model.

    Raises:
        TypeError: if `to_prune` is not a Keras layer, list of layers or model,
            or `pruning_policy` is not a `PruningPolicy`.
        ValueError: for a subclassed model, an unsupported layer, a layer or
            model that is already pruned, a model the policy rejects, or
            invalid arguments.

    Examples:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> pruned = prune_low_magnitude(model, ConstantSparsity(0.5, 0, frequency=1))
        >>> type(pruned.layers[0]).__name__
        'PruneLowMagnitude'
    """
    if pruning_policy is not None:
        if not isinstance(pruning_policy, PruningPolicy):
            raise TypeError(
                "`pruning_policy` must be a keras_pruning.PruningPolicy, such as "
                "PruneForLatencyOnXNNPack(), or None. Received: "
                f"pruning_policy={pruning_policy!r}"
            )
        if not isinstance(to_prune, keras.Model):
            raise TypeError(
                "`pruning_policy` checks and selects layers of a model; to prune "
                f"a single layer or a list of layers, leave it out. `to_prune` is "
                f"a {type(to_prune).__name__}. Received: "
                f"pruning_policy={pruning_policy!r}"
            )
    select = _selection(layers, pruning_schedule)
    if select is not None and not isinstance(to_prune, keras.Model):
        raise TypeError(
            "`layers` and a dict `pruning_schedule` select layers of a model; "
            f"`to_prune` is a {type(to_prune).__name__}. Received: "
            f"layers={layers!r}, pruning_schedule={pruning_schedule!r}"
        )
    bounds_of = _check_global_args(
        pruning_schedule, granularity, criterion, global_pruning, sparsity_bounds
    )
    if isinstance(pruning_schedule, dict):
        _check_layer_names(
            to_prune, "pruning_schedule", list(pruning_schedule), pruning_schedule
        )
    if isinstance(to_prune, keras.Model):
        _check_selected_names(to_prune, layers, sparsity_bounds)
    if pruning_schedule is None or isinstance(pruning_schedule, dict):
        pruning_schedule = ConstantSparsity(0.5, 0)
    wrapper_args = dict(
        pruning_schedule=pruning_schedule,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
    )
    if granularity == "channel":
        if pruning_policy is not None:
            raise ValueError(
                "Pruning policies choose layers for weight pruning; "
                "granularity='channel' prunes channel groups. Received: "
                f"pruning_policy={pruning_policy!r}, granularity='channel'"
            )
        return _prune_channels_gradually(to_prune, wrapper_args, select, ignore, kwargs)
    if granularity != "weight":
        raise ValueError(
            "`granularity` must be one of ('weight', 'channel'). Received: "
            f"granularity={granularity!r}"
        )
    if ignore:
        raise ValueError(
            "`ignore` applies to granularity='channel' only. Received: "
            f"ignore={ignore!r}, granularity={granularity!r}"
        )
    wrapper_args.update(
        criterion=criterion, global_pruning=global_pruning, allocation=allocation
    )
    if isinstance(to_prune, (list, tuple)):
        if not to_prune:
            raise ValueError("`to_prune` is an empty list. Received: to_prune=[]")
        return [
            prune_low_magnitude(
                layer, **wrapper_args, sparsity_bounds=sparsity_bounds, **kwargs
            )
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.Model):
        if kwargs:
            raise ValueError(
                "Extra keyword arguments apply to a single wrapped layer, not to "
                f"a model. Received: {sorted(kwargs)}"
            )
        if pruning_policy is not None:
            _check_unpruned_graph_model(to_prune)
            pruning_policy.ensure_model_supports_pruning(to_prune)
        bounds_of = _nested_bounds(to_prune, bounds_of)
        return _prune_model(to_prune, wrapper_args, select, pruning_policy, bounds_of)
    if isinstance(to_prune, keras.layers.Layer):
        return PruneLowMagnitude(
            to_prune, **wrapper_args, sparsity_bounds=bounds_of(to_prune), **kwargs
        )
    raise TypeError(
        "`to_prune` must be a keras.layers.Layer, a list of layers, or a "
        "Sequential or functional keras.Model. Received: "
        f"to_prune={to_prune!r} (of type {type(to_prune).__name__})"
    )


def _prune_channels_gradually(model, wrapper_args, select, ignore, kwargs):
    from keras_pruning.structured import _gradual, _graph

    if not isinstance(model, keras.Model):
        raise TypeError(
            "granularity='channel' prunes channel groups across the layers of a "
            f"model. Received: to_prune={model!r} (of type {type(model).__name__})"
        )
    if kwargs:
        raise ValueError(
            "Extra keyword arguments apply to a single wrapped layer, not to "
            f"a model. Received: {sorted(kwargs)}"
        )
    if wrapper_args["block_size"] != (1, 1) or wrapper_args["sparsity_m_by_n"]:
        raise ValueError(
            "granularity='channel' removes whole channels and takes no "
            "`block_size` or `sparsity_m_by_n`. Received: "
            f"block_size={wrapper_args['block_size']!r}, "
            f"sparsity_m_by_n={wrapper_args['sparsity_m_by_n']!r}"
        )
    if not _is_graph_model(model):
        raise _subclassed_model_error(model)
    if pruning_wrappers(model):
        raise ValueError(
            f"Model {model.name!r} is already pruned: it contains PruneLowMagnitude "
            "layers. Call `strip_pruning(model)` first."
        )
    if select is None:
        schedule = wrapper_args["pruning_schedule"]
        select = lambda layer: schedule  # noqa: E731
    plan = _gradual.channel_wrappers(model, select, _graph._check_ignore(ignore))
    if not plan:
        raise ValueError(
            f"Model {model.name!r} has no channel group that can be pruned: every "
            "group reaches a model input or output, an ignored layer, or an "
            "unselected layer. Check with "
            "`keras_pruning.structured.dependency_groups(model)`."
        )
    clones = {}

    def wrap(layer):
        if id(layer) not in clones:
            if isinstance(layer, keras.Model):
                clones[id(layer)] = keras.models.clone_model(layer, clone_function=wrap)
            elif id(layer) in plan:
                schedule, sides = plan[id(layer)]
                clones[id(layer)] = PruneLowMagnitude(
                    layer,
                    pruning_schedule=schedule,
                    granularity="channel",
                    channel_sides=sides,
                )
            else:
                clones[id(layer)] = layer
        return clones[id(layer)]

    return keras.models.clone_model(model, clone_function=wrap)


def _check_global_args(
    pruning_schedule, granularity, criterion, global_pruning, sparsity_bounds
):
    """Checks the global-pruning arguments that span layers; returns
    `layer -> (floor, cap) or None` for `sparsity_bounds`."""
    received = (
        f"Received: global_pruning={global_pruning!r}, "
        f"sparsity_bounds={sparsity_bounds!r}, criterion={criterion!r}, "
        f"granularity={granularity!r}"
    )
    if not isinstance(global_pruning, bool):
        raise TypeError(f"`global_pruning` must be True or False. {received}")
    _check_channel_settings(granularity, criterion, global_pruning, received)
    if global_pruning and isinstance(pruning_schedule, dict):
        raise ValueError(
            "global_pruning=True ranks all pruned layers against one schedule: "
            "pass one PruningSchedule, and choose the layers with `layers=`. "
            f"Received: pruning_schedule={pruning_schedule!r}"
        )
    if sparsity_bounds is not None and not global_pruning:
        raise ValueError(
            "`sparsity_bounds` limit how a model-wide sparsity is shared among "
            "layers: pass `global_pruning=True` with them (without it, give "
            f"layers their own schedules with a dict `pruning_schedule`). {received}"
        )
    if not isinstance(sparsity_bounds, dict):
        bounds = _check_bounds(sparsity_bounds)
        return lambda layer: bounds
    rules = [
        (_layer_matcher(key, "sparsity_bounds"), _check_bounds(value))
        for key, value in sparsity_bounds.items()
    ]
    return lambda layer: next((b for match, b in rules if match(layer)), None)


def _nested_bounds(model, bounds_of):
    """`layer -> (floor, cap) or None`: `bounds_of(layer)`, else the bounds
    of the nearest nested model holding the layer (bounds given to a nested
    model's name bound the layers inside it)."""
    found = {}

    def walk(container, inherited):
        for layer in container.layers:
            own = bounds_of(layer) or inherited
            if isinstance(layer, keras.Model):
                walk(layer, own)
            else:
                found.setdefault(id(layer), own)

    walk(model, None)
    return lambda layer: found.get(id(layer), bounds_of(layer))


def _check_layer_names(model, argument, keys, received):
    """ValueError for a layer name among `keys` (of `argument`) that no layer
    of `model` has: a typo would silently prune, or bound, nothing."""
    names = {layer.name for layer in model._flatten_layers(include_self=False)}
    missing = [key for key in keys if isinstance(key, str) and key not in names]
    if missing:
        raise ValueError(
            f"`{argument}` names layers that model {model.name!r} does not have: "
            f"{missing}. Its layers: {sorted(names)}. Received: "
            f"{argument}={received!r}"
        )


def _check_selected_names(model, layers, sparsity_bounds=None):
    """`_check_layer_names` for the names in `layers` (unless a predicate)
    and among the keys of a dict `sparsity_bounds`."""
    if layers is not None and (isinstance(layers, type) or not callable(layers)):
        keys = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
        _check_layer_names(model, "layers", keys, layers)
    if isinstance(sparsity_bounds, dict):
        _check_layer_names(
            model, "sparsity_bounds", list(sparsity_bounds), sparsity_bounds
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
        # A function picks single layers: a nested model it accepts (by its
        # size, say) does not select the layers inside it.
        return lambda layer: (
            schedule if not isinstance(layer, keras.Model) and layers(layer) else None
        )
    keys = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    if not keys:
        raise ValueError(
            "`layers` is empty: no layer would be pruned. Received: layers=[]"
        )
    matchers = [_layer_matcher(key, "layers") for key in keys]
    return lambda layer: schedule if any(m(layer) for m in matchers) else None


def _check_built(model):
    """ValueError for a model without weights yet."""
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: give it a `keras.Input` or call "
            "`model.build(input_shape)` first."
        )


def _check_unpruned_graph_model(model):
    if not _is_graph_model(model):
        raise _subclassed_model_error(model)
    already = pruning_wrappers(model)
    if already:
        raise ValueError(
            f"Model {model.name!r} is already pruned: it contains PruneLowMagnitude "
            f"layers ({', '.join(w.name for w in already[:5])}). Call "
            "`strip_pruning(model)` first to prune it again with new settings."
        )


def _prune_model(model, wrapper_args, select=None, policy=None, bounds_of=None):
    _check_unpruned_graph_model(model)
    bounds_of = bounds_of or (lambda layer: None)
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
                    layer,
                    {**wrapper_args, "pruning_schedule": schedule},
                    None,
                    policy,
                    bounds_of,
                )
            elif select is not None and not any(
                select(x) is not None for x in layer._flatten_layers(include_self=False)
            ):
                new = layer  # nothing selected inside: stays as it is
            else:
                new = _prune_model(layer, wrapper_args, select, policy, bounds_of)
        elif schedule is None or (
            policy is not None and not policy.allow_pruning(layer)
        ):
            new = layer  # not selected, or not allowed: stays dense
        elif registry.is_prunable(layer):
            new = PruneLowMagnitude(
                layer,
                **{**wrapper_args, "pruning_schedule": schedule},
                sparsity_bounds=bounds_of(layer),
            )
        elif registry.is_passthrough(layer):
            new = layer
        else:
            raise ValueError(registry._unsupported_message(layer))
        clones[id(layer)] = new
        return new

    return keras.models.clone_model(model, clone_function=wrap)


def strip_pruning(model, *, shrink=False):
    """Removes pruning wrappers, writing `w * mask` into the wrapped weights.

    Args:
        model: a Sequential or functional model (nested models included), or a
            single `PruneLowMagnitude` layer.
        shrink: for a model pruned with `granularity="channel"`, also cut the
            masked channels out, returning a physically smaller model of
            standard layers (new layers, weights copied) whose outputs equal
            the masked model's. Defaults to `False`.

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
    if not isinstance(shrink, bool):
        raise TypeError(f"`shrink` must be True or False. Received: shrink={shrink!r}")
    if shrink and not isinstance(model, keras.Model):
        raise TypeError(
            "`shrink=True` rebuilds a model with fewer channels; pass the "
            f"pruned model. Received: model={model!r} (of type "
            f"{type(model).__name__})"
        )
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

    if shrink:
        return _shrink(model)
    return _clone_uncompiled(model, clone_function=unwrap)


def _shrink(model):
    """`model` rebuilt without the channels its channel masks remove."""
    from keras_pruning.structured._gradual import shrink_masked

    wrappers = pruning_wrappers(model)
    channel = [w for w in wrappers if w.granularity == "channel"]
    if not channel:
        raise ValueError(
            f"`shrink=True` cuts channels masked by granularity='channel' "
            f"pruning, but model {model.name!r} has no such wrappers. Use "
            "`keras_pruning.structured.prune_channels` for one-shot channel "
            "pruning. Received: shrink=True"
        )
    for wrapper in wrappers:
        wrapper.strip()  # writes w * mask, as strip_pruning does
    return shrink_masked(model, channel)


def _clone_uncompiled(model, clone_function=None, call_function=None):
    """`keras.models.clone_model`, minus the compile state.

    Keras compiles a clone of a compiled model, building a fresh optimizer that
    `save()` would store: twice the weights' bytes, for Adam, in a file meant
    for deployment. Stripped and one-shot models are left uncompiled, as
    TFMOT's stripped models are.
    """
    compiled = model.compiled
    model.compiled = False
    try:
        return keras.models.clone_model(
            model, clone_function=clone_function, call_function=call_function
        )
    finally:
        model.compiled = compiled
