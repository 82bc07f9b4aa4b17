"""Dependency groups: which channels of a Keras graph must be cut together.

Every tensor's last axis is described by a *channel map*: for each position
along that axis, the channel space it comes from and the channel's index in
that space. A space is created by each layer that makes new channels (a
Dense's units, a convolution's filters); layers that keep channels
(BatchNormalization, activations, pooling, DepthwiseConv2D) pass the map on;
Concatenate concatenates maps, Flatten tiles them, a depth multiplier repeats
them; Add and the other element-wise merges unite the spaces of their inputs.
After the walk, each united set of spaces is a `Group`: removing its channel
`c` removes position `c` of every tensor and weight axis it reaches.
"""

import dataclasses

import keras
import numpy as np
from keras import layers

__all__ = ("Group", "Member", "dependency_groups")


@dataclasses.dataclass(frozen=True)
class Member:
    """One weight axis that a group's channels index.

    Attributes:
        layer: the layer's name.
        weight: the weight's name (`"kernel"`, `"gamma"`, ...).
        axis: the weight's axis that holds the group's channels.
        role: `"out"` where the layer makes the channels, `"in"` where it
            reads them, `"param"` for per-channel parameters of layers that
            pass channels through (BatchNormalization's gamma, a
            DepthwiseConv2D's kernel).
    """

    layer: str
    weight: str
    axis: int
    role: str


@dataclasses.dataclass(frozen=True)
class Group:
    """Channels that must be removed together.

    Attributes:
        id: the group's index in `dependency_groups`' result.
        size: number of channels.
        producers: names of the layers whose outputs make these channels.
        members: every weight axis the channels index (see `Member`).
        prunable: False when a channel reaches a model output, a model input
            or an ignored layer, or meets a layer that mixes channels.
        reason: why the group is not prunable (`None` when it is).
    """

    id: int
    size: int
    producers: tuple
    members: tuple
    prunable: bool
    reason: str | None


class _ChannelMap:
    """Per position along a tensor's last axis: (space id, channel index)."""

    __slots__ = ("spaces", "channels")

    def __init__(self, spaces, channels):
        self.spaces = np.asarray(spaces, dtype="int64")
        self.channels = np.asarray(channels, dtype="int64")

    def __len__(self):
        return len(self.spaces)

    def concat(self, other):
        return _ChannelMap(
            np.concatenate([self.spaces, other.spaces]),
            np.concatenate([self.channels, other.channels]),
        )

    def tile(self, times):
        return _ChannelMap(np.tile(self.spaces, times), np.tile(self.channels, times))

    def repeat(self, times):
        return _ChannelMap(
            np.repeat(self.spaces, times), np.repeat(self.channels, times)
        )


# Layers that neither mix nor change channels and hold no per-channel weights.
_ELEMENTWISE = (
    layers.ReLU,
    layers.LeakyReLU,
    layers.ELU,
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
    layers.ActivityRegularization,
    layers.Identity,
    layers.Resizing,
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.MaxPooling3D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.ZeroPadding3D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Cropping3D,
    layers.UpSampling1D,
    layers.UpSampling2D,
    layers.UpSampling3D,
)
_MERGES = (
    layers.Add,
    layers.Subtract,
    layers.Multiply,
    layers.Maximum,
    layers.Minimum,
    layers.Average,
)
_CONVS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
_CONV_TRANSPOSES = (
    layers.Conv1DTranspose,
    layers.Conv2DTranspose,
    layers.Conv3DTranspose,
)
_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_CROSS_CHANNEL_ACTIVATIONS = ("softmax", "log_softmax", "sparsemax", "glu")

SUPPORTED_LAYERS = tuple(
    sorted(
        {
            t.__name__
            for t in (
                _ELEMENTWISE
                + _MERGES
                + _CONVS
                + _CONV_TRANSPOSES
                + _SEPARABLE
                + _DEPTHWISE
                + (
                    layers.Dense,
                    layers.BatchNormalization,
                    layers.LayerNormalization,
                    layers.PReLU,
                    layers.Activation,
                    layers.Softmax,
                    layers.Rescaling,
                    layers.Concatenate,
                    layers.Flatten,
                    layers.Reshape,
                    layers.InputLayer,
                )
            )
        }
    )
)


def _unwrap(layer):
    """The layer a pruning wrapper holds, or `layer` itself."""
    from keras_pruning.wrapper import PruneLowMagnitude

    return layer.layer if isinstance(layer, PruneLowMagnitude) else layer


def _weight_axes(layer):
    """`[(weight attribute, {axis: "in" | "out" | "mid"}, kind)]` for `layer`.

    "in" and "out" index the layer's input and output channel maps; "mid" is
    a separable convolution's depthwise output (the input map repeated
    `depth_multiplier` times). `kind` is "param" for layers that pass
    channels through, else "out". Empty for layers without per-channel
    weights.
    """
    if isinstance(layer, layers.Dense):
        return [("kernel", {0: "in", 1: "out"}, "out"), ("bias", {0: "out"}, "out")]
    if isinstance(layer, _SEPARABLE):
        return [
            ("depthwise_kernel", {-2: "in"}, "in"),
            ("pointwise_kernel", {-2: "mid", -1: "out"}, "out"),
            ("bias", {0: "out"}, "out"),
        ]
    if isinstance(layer, _CONVS):
        return [("kernel", {-2: "in", -1: "out"}, "out"), ("bias", {0: "out"}, "out")]
    if isinstance(layer, _CONV_TRANSPOSES):
        return [("kernel", {-1: "in", -2: "out"}, "out"), ("bias", {0: "out"}, "out")]
    if isinstance(layer, _DEPTHWISE):
        return [
            ("kernel", {-2: "in"}, "param"),
            ("bias", {0: "out"}, "param"),
        ]
    if isinstance(layer, layers.BatchNormalization):
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return [(name, {0: "in"}, "param") for name in names]
    if isinstance(layer, layers.LayerNormalization):
        return [(name, {0: "in"}, "param") for name in ("gamma", "beta")]
    if isinstance(layer, layers.PReLU):
        return [("alpha", {-1: "in"}, "param")]
    return []


def layer_weights(layer):
    """`[(variable, {axis: map name}, role)]` for `layer`'s per-channel weights."""
    layer = _unwrap(layer)
    found = []
    for name, axes, role in _weight_axes(layer):
        variable = getattr(layer, name, None)
        if variable is None:
            continue
        if isinstance(layer, layers.PReLU) and variable.shape[-1] == 1:
            continue  # alpha shared across channels
        found.append((variable, axes, role))
    return found


def maskable_weights(layer):
    """`layer_weights` that a channel mask multiplies: all but the moving
    statistics of a BatchNormalization, which its `call` updates (a masked
    value would drop the update), trainable or frozen."""
    layer = _unwrap(layer)
    statistics = (
        {id(layer.moving_mean), id(layer.moving_variance)}
        if isinstance(layer, layers.BatchNormalization)
        else set()
    )
    return [entry for entry in layer_weights(layer) if id(entry[0]) not in statistics]


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _axes(axis, rank):
    return [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]


def _last_axis(axis, rank):
    """Whether `axis` is the last axis alone."""
    return _axes(axis, rank) == [rank - 1]


def _covers_last_axis(axis, rank):
    """Whether `axis` includes the last axis (a softmax over it mixes channels)."""
    return rank - 1 in _axes(axis, rank)


def _mixes_channels(activation):
    """Whether an activation function mixes the channels (softmax over them)."""
    return getattr(activation, "__name__", "") in _CROSS_CHANNEL_ACTIVATIONS


class _Tracer:
    """Walks a model once, recording channel maps and per-layer calls."""

    def __init__(self, ignore, lenient=False):
        self.ignore = ignore
        self.lenient = lenient
        self.parent = []  # union-find over spaces
        self.sizes = []
        self.fixed = {}  # space -> reason
        self.producer = {}  # space -> the layer that makes it
        self.layer_space = {}  # id(layer) -> the space its outputs make
        self.maps = {}  # id(KerasTensor) -> _ChannelMap
        self.calls = []  # (layer, {"in": map, "out": map, "mid": map})
        self.seen_calls = {}  # id(layer) -> index into calls
        self.matched = set()  # the names in `ignore` met while tracing

    # -- spaces ----------------------------------------------------------
    def new_space(self, size, producer=None, fixed=None):
        space = len(self.parent)
        self.parent.append(space)
        self.sizes.append(size)
        if producer is not None:
            self.producer[space] = producer
        if fixed is not None:
            self.fixed[space] = fixed
        return _ChannelMap(np.full(size, space), np.arange(size))

    def root(self, space):
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def fix(self, channel_map, reason):
        for space in np.unique(channel_map.spaces):
            self.fixed.setdefault(int(space), reason)

    def _whole_space(self, channel_map):
        """The space a map covers exactly once in order, or None."""
        spaces = np.unique(channel_map.spaces)
        if len(spaces) != 1:
            return None
        space = int(spaces[0])
        if self.sizes[space] != len(channel_map) or not np.array_equal(
            channel_map.channels, np.arange(len(channel_map))
        ):
            return None
        return space

    def unite(self, maps, reason):
        """Makes equal-length maps index the same channels; returns the map."""
        first = maps[0]
        for other in maps[1:]:
            if np.array_equal(first.spaces, other.spaces) and np.array_equal(
                first.channels, other.channels
            ):
                continue
            a, b = self._whole_space(first), self._whole_space(other)
            if a is None or b is None:
                # Position-wise coupling of two different layouts: keep both.
                self.fix(first, reason)
                self.fix(other, reason)
                continue
            ra, rb = self.root(a), self.root(b)
            if ra != rb:
                self.parent[rb] = ra
        return first

    # -- walk ------------------------------------------------------------
    def trace_model(self, model, input_maps):
        graph = _graph_of(model)
        for tensor, channel_map in zip(graph.inputs, input_maps, strict=True):
            self.maps[id(tensor)] = channel_map
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                in_maps = [self.maps[id(t)] for t in node.input_tensors]
                out_maps = self.trace_call(
                    node.operation, in_maps, node.input_tensors, node.outputs
                )
                for tensor, channel_map in zip(node.outputs, out_maps, strict=True):
                    self.maps[id(tensor)] = channel_map
        return [self.maps[id(t)] for t in graph.outputs]

    def trace_call(self, operation, in_maps, inputs, outputs):
        if isinstance(operation, keras.Model) and not self._ignored(operation):
            return self.trace_model(operation, in_maps)
        layer = _unwrap(operation)
        name = getattr(layer, "name", type(layer).__name__)
        if not self._ignored(operation):
            try:
                out_maps = self._layer_maps(layer, in_maps, inputs, outputs)
            except _Untraceable:
                if not self.lenient:
                    raise
            else:
                self._record(layer, in_maps, out_maps, name)
                return out_maps
        reason = f"ignored layer {name!r}"
        for m in in_maps:
            self.fix(m, reason)
        return [self.new_space(_channels(t), fixed=reason) for t in outputs]

    def _record(self, layer, in_maps, out_maps, name):
        maps = {"in": in_maps[0] if in_maps else None, "out": out_maps[0]}
        if isinstance(layer, _SEPARABLE):
            maps["mid"] = maps["in"].repeat(layer.depth_multiplier)
        if id(layer) in self.seen_calls:  # a shared layer: calls must agree
            before = self.calls[self.seen_calls[id(layer)]][1]
            reason = f"layer {name!r} is called on different channels"
            for key, channel_map in maps.items():
                if channel_map is not None and len(channel_map) == len(before[key]):
                    self.unite([before[key], channel_map], reason)
            return
        self.seen_calls[id(layer)] = len(self.calls)
        self.calls.append((layer, maps))

    def _ignored(self, operation):
        layer = _unwrap(operation)
        names = (operation.name, layer.name)
        self.matched.update(k for k in self.ignore if isinstance(k, str) and k in names)
        return any(
            (isinstance(key, str) and key in names)
            or (isinstance(key, type) and isinstance(layer, key))
            for key in self.ignore
        )

    def _produce(self, layer, outputs):
        if id(layer) not in self.layer_space:
            self.layer_space[id(layer)] = self.new_space(
                _channels(outputs[0]), producer=layer
            )
            if _mixes_channels(getattr(layer, "activation", None)):
                self.fix(
                    self.layer_space[id(layer)],
                    f"layer {layer.name!r} mixes channels (its activation)",
                )
        return [self.layer_space[id(layer)]]

    def _layer_maps(self, layer, in_maps, inputs, outputs):
        name = layer.name
        if not _channels_last(layer):
            raise _unsupported(layer, "it is not channels_last")
        if isinstance(layer, layers.InputLayer):
            return in_maps
        if getattr(layer, "lora_enabled", False):
            raise _unsupported(layer, "it has LoRA weights enabled")
        if isinstance(layer, layers.Dense) or (
            isinstance(layer, _CONVS + _CONV_TRANSPOSES + _SEPARABLE)
            and getattr(layer, "groups", 1) == 1
        ):
            return self._produce(layer, outputs)
        if isinstance(layer, _DEPTHWISE):
            multiplier = layer.depth_multiplier
            return [in_maps[0] if multiplier == 1 else in_maps[0].repeat(multiplier)]
        if isinstance(layer, _ELEMENTWISE):
            return [in_maps[0]]
        if isinstance(layer, (layers.BatchNormalization, layers.LayerNormalization)):
            # Their parameters are per channel only along the last axis.
            if not _last_axis(layer.axis, len(inputs[0].shape)):
                raise _unsupported(layer, f"it normalizes axis {layer.axis}")
            return [in_maps[0]]
        if isinstance(layer, layers.Softmax) or (
            isinstance(layer, layers.Activation) and _mixes_channels(layer.activation)
        ):
            axis = getattr(layer, "axis", -1)
            if _covers_last_axis(axis, len(inputs[0].shape)):
                reason = f"layer {name!r} mixes channels ({type(layer).__name__})"
                self.fix(in_maps[0], reason)
                return [self.new_space(_channels(outputs[0]), fixed=reason)]
            return [in_maps[0]]
        if isinstance(layer, (layers.Activation, layers.PReLU)):
            return [in_maps[0]]
        if isinstance(layer, layers.Rescaling):
            if np.size(layer.scale) == 1 and np.size(layer.offset) == 1:
                return [in_maps[0]]
            reason = f"layer {name!r} scales channels by constants"
            self.fix(in_maps[0], reason)
            return [self.new_space(_channels(outputs[0]), fixed=reason)]
        if isinstance(layer, _MERGES):
            size = _channels(outputs[0])
            same = [m for m in in_maps if len(m) == size]
            for m in in_maps:
                if len(m) != size:  # broadcast along channels: keep it whole
                    self.fix(m, f"layer {name!r} broadcasts it over channels")
            return [self.unite(same, f"layer {name!r} merges different layouts")]
        if isinstance(layer, layers.Concatenate):
            rank = len(outputs[0].shape)
            if layer.axis % rank == rank - 1:
                result = in_maps[0]
                for m in in_maps[1:]:
                    result = result.concat(m)
                return [result]
            return [self.unite(in_maps, f"layer {name!r} merges different layouts")]
        if isinstance(layer, (layers.Flatten, layers.Reshape)):
            in_shape, out_shape = inputs[0].shape, outputs[0].shape
            if (
                len(in_shape) > 1
                and in_shape[-1] == out_shape[-1]
                and (isinstance(layer, layers.Reshape))
            ):
                return [in_maps[0]]
            if len(out_shape) == 2 and None not in in_shape[1:]:
                return [in_maps[0].tile(int(np.prod(in_shape[1:-1], dtype="int64")))]
            reason = f"layer {name!r} reshapes the channel axis"
            self.fix(in_maps[0], reason)
            return [self.new_space(_channels(outputs[0]), fixed=reason)]
        raise _unsupported(layer)


def _channels(tensor):
    size = tensor.shape[-1] if len(tensor.shape) > 1 else 1
    if size is None:
        raise ValueError(
            f"Tensor {tensor.name!r} has an unknown number of channels (last "
            f"axis); structured pruning needs static channel counts. Received: "
            f"shape={tensor.shape}"
        )
    return int(size)


class _Untraceable(ValueError):
    """A layer the channel analysis cannot trace."""


def _unsupported(layer, why=None):
    reason = f", because {why}" if why else ""
    what = (
        f"layer {layer.name!r} of class {type(layer).__name__}"
        if isinstance(layer, keras.layers.Layer)
        else f"operation {layer.name!r} (keras.ops {type(layer).__name__}, "
        "applied outside any layer)"
    )
    return _Untraceable(
        f"Structured pruning cannot trace channels through {what}{reason}. Pass "
        f"`ignore=[{layer.name!r}]` to keep its input and output channels "
        f"whole. Supported layers: {', '.join(SUPPORTED_LAYERS)}."
    )


def _graph_of(model):
    """The functional graph of a Sequential or functional model."""
    from keras_pruning.prune import _is_graph_model, _subclassed_model_error

    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Sequential or functional keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if not _is_graph_model(model):
        raise _subclassed_model_error(model)
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if graph is None or not model.built:
        raise ValueError(
            f"Model {model.name!r} has no known input shape. Start it with "
            "`keras.Input(shape)` (or build it) before structured pruning. "
            f"Received: model={model.name!r}"
        )
    return graph


class Analysis:
    """The traced model: channel maps, groups and per-layer calls.

    With `lenient`, layers the analysis cannot trace are treated as ignored
    (used on models pruned earlier, whose ignored layers are not recorded).
    """

    def __init__(self, model, ignore=(), lenient=False):
        tracer = _Tracer(tuple(ignore), lenient)
        graph = _graph_of(model)
        input_maps = [
            tracer.new_space(_channels(t), fixed="model input") for t in graph.inputs
        ]
        for channel_map in tracer.trace_model(model, input_maps):
            tracer.fix(channel_map, "model output")
        known = {x.name for x in model._flatten_layers(include_self=False)}
        unknown = [
            k
            for k in ignore
            if isinstance(k, str) and k not in known and k not in tracer.matched
        ]
        if unknown and not lenient:
            raise ValueError(
                f"`ignore` names layers that model {model.name!r} does not "
                f"have (nested models' layers included): {unknown}. Received: "
                f"ignore={list(ignore)}"
            )
        self.maps = tracer.maps
        self.calls = tracer.calls
        roots = [tracer.root(s) for s in range(len(tracer.parent))]
        self.root_of = np.asarray(roots, dtype="int64")
        reasons = {}
        for space, reason in tracer.fixed.items():
            reasons.setdefault(roots[space], reason)
        root_ids = sorted(set(roots))
        self._group_of_root = {root: i for i, root in enumerate(root_ids)}
        producers = {root: [] for root in root_ids}
        for space, layer in tracer.producer.items():
            producers[roots[space]].append(layer)
        members = {root: [] for root in root_ids}
        for layer, maps in self.calls:
            for variable, axes, role in layer_weights(layer):
                for axis, key in axes.items():
                    side = (
                        role if role == "param" else ("out" if key == "out" else "in")
                    )
                    name = _weight_name(variable, layer)
                    for root in np.unique(self.root_of[maps[key].spaces]):
                        members[int(root)].append(Member(layer.name, name, axis, side))
        self.groups = [
            Group(
                id=i,
                size=tracer.sizes[root],
                producers=tuple(layer.name for layer in producers[root]),
                members=tuple(members[root]),
                prunable=root not in reasons and bool(producers[root]),
                reason=reasons.get(root, None if producers[root] else "no producer"),
            )
            for i, root in enumerate(root_ids)
        ]
        # The layers themselves: names need not be unique across nested models.
        self.producer_layers = [producers[root] for root in root_ids]

    def group_positions(self, channel_map):
        """`(group ids, channel ids)` for each position of a channel map."""
        roots = self.root_of[channel_map.spaces]
        groups = np.asarray([self._group_of_root[int(r)] for r in roots], "int64")
        return groups, channel_map.channels

    def keep_positions(self, channel_map, keep):
        """Boolean per position: is its channel kept? `keep[group]` is a
        boolean vector over the group's channels (absent: all kept)."""
        groups, channels = self.group_positions(channel_map)
        result = np.ones(len(channel_map), dtype=bool)
        for g in np.unique(groups):
            if int(g) in keep:
                where = groups == g
                result[where] = np.asarray(keep[int(g)])[channels[where]]
        return result


def _weight_name(variable, layer):
    return variable.path.split("/")[-1] if variable.path else variable.name


def dependency_groups(model, *, ignore=()):
    """Finds the channel groups of `model` that must be pruned together.

    Args:
        model: a Sequential or functional model; nested models and pruning
            wrappers are traced through.
        ignore: layer names or classes whose input and output channels are
            never cut (use it for layers the analysis cannot trace).
            Defaults to `()`.

    Returns:
        A list of `Group`s, one per set of coupled channels, including
        unprunable ones (model inputs and outputs) with their `reason`.

    Raises:
        ValueError: for a layer the analysis cannot trace (its name and class
            are in the message), a subclassed model, or unknown shapes.

    Examples:
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
        ...                           keras.layers.Dense(2)])
        >>> [(g.producers, g.prunable) for g in dependency_groups(model)]
        [((), False), (('dense',), True), (('dense_1',), False)]
    """
    return Analysis(model, _check_ignore(ignore)).groups


def _check_ignore(ignore):
    if isinstance(ignore, (str, type)):
        ignore = [ignore]
    if not isinstance(ignore, (list, tuple, set)):
        raise TypeError(
            "`ignore` must be a list of layer names or layer classes. "
            f"Received: ignore={ignore!r}"
        )
    for key in ignore:
        if not (
            isinstance(key, str)
            or (isinstance(key, type) and issubclass(key, keras.layers.Layer))
        ):
            raise TypeError(
                "`ignore` must hold layer names (str) or keras.layers.Layer "
                f"subclasses. Received: {key!r} (of type {type(key).__name__})"
            )
    return tuple(ignore)
