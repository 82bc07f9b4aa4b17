"""Pruning policies: which layers of a model `prune_low_magnitude` wraps.

A `PruningPolicy` is asked about every layer of a model (nested models
included) and checks the model as a whole before anything is wrapped.
`PruneForLatencyOnXNNPack` keeps to what XNNPACK's sparse inference runs
faster: the 1x1 convolutions of a subgraph that starts with a padded 3x3
stride-2 convolution and ends with a global average pooling.
"""

import abc

import keras
from keras import layers
from keras.src.models.functional import Functional

__all__ = ("PruningPolicy", "PruneForLatencyOnXNNPack", "pad_for_xnnpack")


class PruningPolicy(abc.ABC):
    """Decides which layers of a model `prune_low_magnitude` wraps.

    `prune_low_magnitude(model, pruning_policy=policy)` first calls
    `policy.ensure_model_supports_pruning(model)`, then wraps only the
    layers for which `policy.allow_pruning(layer)` is true (and that `layers=`
    or a dict `pruning_schedule` select, when given). Layers inside nested
    models are asked one by one. Write a policy by subclassing this class and
    implementing `allow_pruning`; `ensure_model_supports_pruning` accepts
    every model unless overridden.

    Examples:
        >>> class PruneDenseOnly(PruningPolicy):
        ...     def allow_pruning(self, layer):
        ...         return isinstance(layer, keras.layers.Dense)
        >>> pruned = prune_low_magnitude(model, pruning_policy=PruneDenseOnly())
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """Returns whether `layer` may be wrapped in `PruneLowMagnitude`.

        Args:
            layer: a layer of the model (never a nested model itself).

        Returns:
            A bool.
        """

    def ensure_model_supports_pruning(self, model):
        """Checks the whole model before any layer is wrapped.

        Args:
            model: the Sequential or functional `keras.Model` to prune.

        Raises:
            ValueError: if the policy cannot be applied to `model`. The base
                class accepts every model.
        """
        del model

    def __repr__(self):
        return f"{type(self).__name__}()"


_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")
_ELEMENTWISE_OPS = ("Add", "Multiply")  # keras.ops.add / multiply, `x + y`, `x * y`
_START = (
    "a Conv2D with a 3x3 kernel, strides 2, padding='valid', no dilation and 3 "
    "input channels, right after ZeroPadding2D(padding=1)"
)
_SUPPORTED = (
    "Conv2D with a 1x1 kernel (strides 1, no dilation, groups=1); "
    "DepthwiseConv2D 3x3 or 5x5 (depth_multiplier=1, no dilation) with strides 1 "
    "and padding='same', or strides 1 or 2 and padding='valid' after "
    "ZeroPadding2D(padding=1) (3x3) or ZeroPadding2D(padding=2) (5x5); "
    "BatchNormalization on the channel axis; Add, Multiply (layers or "
    "keras.ops); ReLU, LeakyReLU, ELU, Activation "
    f"({', '.join(_ACTIVATIONS)}); ZeroPadding2D; Dropout; "
    "UpSampling2D(interpolation='bilinear'); GlobalAveragePooling2D(keepdims=True)"
)


def _plain(value):
    """A layer attribute with lists as tuples, to compare with a tuple."""
    return tuple(value) if isinstance(value, list) else value


def _describe(layer):
    return f"{type(layer).__name__} {layer.name!r}"


def _graph_model(model):
    """The `Functional` graph of a Sequential or functional model, or None
    for a subclassed model or a Sequential model without an input shape."""
    if isinstance(model, keras.Sequential):
        return model._functional
    return model if isinstance(model, Functional) else None


class _LayerGraph:
    """The layer graph of a model, nested Sequential and functional models
    flattened into their layers. Vertices are the layers (and `keras.ops`
    operations) of the graph; a layer called several times is one vertex."""

    def __init__(self, functional):
        self._producers = {}
        self._consumers = {}
        self.inputs = [
            tensor._keras_history.operation
            for tensor in keras.tree.flatten(functional.inputs)
        ]
        made = self._walk(functional, {})
        self.outputs = list(
            dict.fromkeys(
                source
                for tensor in keras.tree.flatten(functional.outputs)
                for source in made[id(tensor)]
            )
        )

    def _walk(self, functional, feeds):
        """Adds the edges of `functional`; `feeds` maps its input tensors to
        the vertices that produce them outside. Returns tensor -> producers."""
        made = dict(feeds)
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                operation = node.operation
                if node.is_input:
                    for tensor in node.output_tensors:
                        made.setdefault(id(tensor), [operation])
                    continue
                sources = list(
                    dict.fromkeys(
                        s for t in node.input_tensors for s in made.get(id(t), [])
                    )
                )
                inner = _graph_model(operation)
                if inner is None:
                    for source in sources:
                        self._link(source, operation)
                    for tensor in node.output_tensors:
                        made[id(tensor)] = [operation]
                    continue
                # Tensors passed as other call arguments (a mask) feed no input.
                inner_feeds = {
                    id(inner_input): made.get(id(tensor), [])
                    for inner_input, tensor in zip(
                        keras.tree.flatten(inner.inputs),
                        node.input_tensors,
                        strict=False,
                    )
                }
                inner_made = self._walk(inner, inner_feeds)
                for outer, tensor in zip(
                    node.output_tensors, keras.tree.flatten(inner.outputs), strict=True
                ):
                    made[id(outer)] = inner_made[id(tensor)]
        return made

    def _link(self, source, target):
        consumers = self._consumers.setdefault(id(source), [])
        if target not in consumers:
            consumers.append(target)
        producers = self._producers.setdefault(id(target), [])
        if source not in producers:
            producers.append(source)

    def producers(self, vertex):
        return self._producers.get(id(vertex), [])

    def consumers(self, vertex):
        return self._consumers.get(id(vertex), [])

    def search(self, sources, stop, step):
        """Walks from `sources` along `step` (producers or consumers) until
        `stop(vertex)` holds. Returns `(found, dead_end)`: the vertices where
        the walk stopped, and a vertex where a path ended without reaching
        one (None if every path reached one), as TFMOT's `_lookup_layers`."""
        to_visit, seen, found = list(sources), set(map(id, sources)), []
        while to_visit:
            vertex = to_visit.pop(0)
            if stop(vertex):
                found.append(vertex)
                continue
            following = step(vertex)
            if not following:
                return found, vertex
            for other in following:
                if id(other) not in seen:
                    seen.add(id(other))
                    to_visit.append(other)
        return found, None


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 Conv2D layers, in a model XNNPACK can run sparse.

    XNNPACK (the CPU backend of LiteRT) runs a subgraph with sparse kernels
    ("Fast Sparse ConvNets", Elsen et al. 2019) when it starts with a 3x3
    stride-2 convolution on 3 channels with a padding of 1 on each side, ends
    with a global average pooling, and holds only operators XNNPACK's sparse
    inference supports. Only its 1x1 convolutions are computed sparse, so
    only they are worth pruning. This policy checks the model's graph as
    TFMOT's does, nested models included:

    - every input branch reaches a start: a Conv2D with a 3x3 kernel, strides
      2, padding `'valid'`, no dilation and 3 input channels, whose only
      input is a `ZeroPadding2D(padding=1)`. Keras's `padding='same'` pads a
      stride-2 convolution on one side only, which XNNPACK does not run
      sparse; `pad_for_xnnpack(model)` rewrites such models;
    - every output branch passes a `GlobalAveragePooling2D`;
    - every layer between them is supported: 1x1 Conv2D (strides 1, no
      dilation, groups 1), 3x3 or 5x5 DepthwiseConv2D with a padding XNNPACK
      accepts, BatchNormalization on the channel axis, Add and Multiply,
      ReLU, LeakyReLU, ELU and relu/relu6/leaky_relu/elu/sigmoid activations,
      ZeroPadding2D, Dropout, bilinear UpSampling2D, and
      GlobalAveragePooling2D with `keepdims=True` (squeeze-and-excitation).

    Then `allow_pruning` admits every Conv2D with a 1x1 kernel. XNNPACK
    switches to sparse kernels only in float models (float32 or float16, not
    int8), and only when more than two thirds of the subgraph's 1x1
    convolution weights are zero: prune to a sparsity above 2/3, such as 0.75.

    Examples:
        >>> pruned = prune_low_magnitude(
        ...     model, PolynomialDecay(0.0, 0.75, 0, 1000),
        ...     pruning_policy=PruneForLatencyOnXNNPack())
    """

    def allow_pruning(self, layer):
        """Returns True for a Conv2D with a 1x1 kernel."""
        return isinstance(layer, layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)

    def ensure_model_supports_pruning(self, model):
        """Checks that `model` holds a subgraph XNNPACK can run sparse.

        Args:
            model: a built Sequential or functional `keras.Model`.

        Raises:
            ValueError: naming the check that failed and the layer where it
                failed: a subclassed or unbuilt model, an input branch with no
                start convolution, an output branch with no
                GlobalAveragePooling2D, or an unsupported layer between them.
        """
        name = type(self).__name__
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"{name} checks a keras.Model. Received: model={model!r} (of "
                f"type {type(model).__name__})"
            )
        functional = _graph_model(model)
        if functional is None:
            if isinstance(model, keras.Sequential):
                raise ValueError(
                    f"{name} checks the layer graph of Sequential model "
                    f"{model.name!r}, which is not built: start it with a "
                    "`keras.Input(shape)`. Received: an unbuilt model"
                )
            raise ValueError(
                f"{name} checks a model's layer graph, which a subclassed model "
                "does not have: build it as a Sequential or functional model. "
                f"Received: model={model.name!r} of class {type(model).__name__}"
            )
        graph = _LayerGraph(functional)

        near_misses = []

        def is_start(vertex):
            problems = self._start_problems(vertex, graph)
            if problems and isinstance(vertex, layers.Conv2D):
                near_misses.append((vertex, problems))
            return not problems

        starts, dead_end = graph.search(graph.inputs, is_start, graph.consumers)
        if dead_end is not None:
            if near_misses:
                layer, problems = near_misses[0]
                received = f"{_describe(layer)} with {'; '.join(problems)}"
            else:
                received = "no Conv2D on this branch"
            raise ValueError(
                f"{name}: every input branch of model {model.name!r} must start "
                f"the sparse subgraph with {_START}, but the branch that reaches "
                f"{_describe(dead_end)} has none. `keras_pruning.pad_for_xnnpack"
                "(model)` rewrites stride-2 convolutions with padding='same' (as "
                f"in keras.applications). Received: {received}"
            )

        ends, dead_end = graph.search(
            graph.outputs,
            lambda vertex: isinstance(vertex, layers.GlobalAveragePooling2D),
            graph.producers,
        )
        if dead_end is not None:
            raise ValueError(
                f"{name}: every output branch of model {model.name!r} must pass "
                "a GlobalAveragePooling2D, where XNNPACK's sparse subgraph ends. "
                "Received: a path from the outputs ("
                f"{', '.join(_describe(o) for o in graph.outputs)}) back to "
                f"{_describe(dead_end)} without one"
            )

        end_ids = set(map(id, ends))

        def check(vertex):
            if id(vertex) in end_ids:
                return True
            problem = self._support_problem(vertex, graph)
            if problem is not None:
                raise ValueError(
                    f"Layer {_describe(vertex)} is not supported by the {name} "
                    "pruning policy: it lies between the start convolution "
                    f"{_describe(starts[0])} and a GlobalAveragePooling2D, and "
                    "XNNPACK's sparse inference does not run it. Supported: "
                    f"{_SUPPORTED}. Received: {problem}"
                )
            return False

        following = [c for start in starts for c in graph.consumers(start)]
        graph.search(list(dict.fromkeys(following)), check, graph.consumers)

    @staticmethod
    def _padding_before(layer, graph):
        """The padding of the ZeroPadding2D that is `layer`'s only input, or
        None."""
        producers = graph.producers(layer)
        if len(producers) == 1 and isinstance(producers[0], layers.ZeroPadding2D):
            return tuple(map(tuple, producers[0].padding))
        return None

    def _start_problems(self, vertex, graph):
        """Why `vertex` cannot start the sparse subgraph (empty if it can)."""
        if not isinstance(vertex, layers.Conv2D):
            return [f"class {type(vertex).__name__}"]
        expected = {
            "kernel_size": (3, 3),
            "strides": (2, 2),
            "padding": "valid",
            "dilation_rate": (1, 1),
            "groups": 1,
        }
        problems = [
            f"{key}={_plain(getattr(vertex, key))!r} (expected {value!r})"
            for key, value in expected.items()
            if _plain(getattr(vertex, key)) != value
        ]
        channels = vertex.kernel.shape[2] if vertex.built else None
        if channels != 3:
            problems.append(f"{channels} input channels (expected 3)")
        padding = self._padding_before(vertex, graph)
        if padding != ((1, 1), (1, 1)):
            inputs = ", ".join(_describe(p) for p in graph.producers(vertex))
            shown = f"ZeroPadding2D(padding={padding})" if padding else inputs
            problems.append(f"input from {shown} (expected ZeroPadding2D(padding=1))")
        return problems

    def _support_problem(self, vertex, graph):
        """Why XNNPACK's sparse inference cannot run `vertex` (None if it can)."""
        if not isinstance(vertex, keras.layers.Layer):
            # A keras.ops operation in a functional model, such as `x + y`.
            if type(vertex).__name__ in _ELEMENTWISE_OPS:
                return None
            return f"the keras.ops operation {type(vertex).__name__}"
        if isinstance(
            vertex,
            (
                layers.Add,
                layers.Multiply,
                layers.ZeroPadding2D,
                layers.ReLU,
                layers.LeakyReLU,
                layers.ELU,
                layers.Dropout,
            ),
        ):
            return None
        if isinstance(vertex, layers.DepthwiseConv2D):
            return self._depthwise_problem(vertex, graph)
        if isinstance(vertex, layers.Conv2D):
            if (
                tuple(vertex.kernel_size) == (1, 1)
                and tuple(vertex.strides) == (1, 1)
                and tuple(vertex.dilation_rate) == (1, 1)
                and vertex.groups == 1
            ):
                return None
            return (
                f"{_describe(vertex)} with kernel_size={vertex.kernel_size}, "
                f"strides={vertex.strides}, dilation_rate={vertex.dilation_rate}, "
                f"groups={vertex.groups}"
            )
        if isinstance(vertex, layers.GlobalAveragePooling2D):
            # Inside the subgraph, as in a squeeze-and-excitation block.
            if vertex.keepdims:
                return None
            return f"{_describe(vertex)} with keepdims=False"
        if isinstance(vertex, layers.BatchNormalization):
            if vertex.axis in (-1, 3):
                return None
            return f"{_describe(vertex)} with axis={vertex.axis}"
        if isinstance(vertex, layers.UpSampling2D):
            if vertex.interpolation == "bilinear":
                return None
            return f"{_describe(vertex)} with interpolation={vertex.interpolation!r}"
        if isinstance(vertex, layers.Activation):
            activation = keras.activations.serialize(vertex.activation)
            if activation in _ACTIVATIONS:
                return None
            return f"{_describe(vertex)} with activation={activation!r}"
        return _describe(vertex)

    def _depthwise_problem(self, layer, graph):
        kernel, strides = tuple(layer.kernel_size), tuple(layer.strides)
        padding = self._padding_before(layer, graph)
        side = kernel[0] // 2
        supported = (
            layer.depth_multiplier == 1
            and tuple(layer.dilation_rate) == (1, 1)
            and kernel in ((3, 3), (5, 5))
            and (
                (strides == (1, 1) and layer.padding == "same")
                or (
                    strides in ((1, 1), (2, 2))
                    and layer.padding == "valid"
                    and padding == ((side, side), (side, side))
                )
            )
        )
        if supported:
            return None
        before = f", after ZeroPadding2D(padding={padding})" if padding else ""
        return (
            f"{_describe(layer)} with kernel_size={kernel}, strides={strides}, "
            f"padding={layer.padding!r}, depth_multiplier={layer.depth_multiplier}, "
            f"dilation_rate={tuple(layer.dilation_rate)}{before}"
        )


def _same_stride_two(layer):
    """The one-side padding `k // 2` for a Conv2D or DepthwiseConv2D with a
    3x3 or 5x5 kernel, strides 2 and padding='same', else None."""
    if (
        isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))
        and layer.padding == "same"
        and tuple(layer.strides) == (2, 2)
        and tuple(layer.kernel_size) in ((3, 3), (5, 5))
    ):
        return layer.kernel_size[0] // 2
    return None


def _one_sided_padding(layer, graph):
    """The symmetric padding `k // 2` that should replace `layer`, a
    ZeroPadding2D padding `(k // 2 - 1, k // 2)` on both axes (keras.applications'
    `correct_pad` for inputs of even size) whose every consumer is a 'valid'
    stride-2 convolution with a k x k kernel; else None."""
    if not isinstance(layer, layers.ZeroPadding2D):
        return None
    kernels = {
        tuple(c.kernel_size)
        if isinstance(c, (layers.Conv2D, layers.DepthwiseConv2D))
        and c.padding == "valid"
        and tuple(c.strides) == (2, 2)
        else None
        for c in graph.consumers(layer)
    }
    if len(kernels) != 1 or None in kernels:
        return None
    ((height, width),) = kernels
    side = height // 2
    if height == width and tuple(map(tuple, layer.padding)) == ((side - 1, side),) * 2:
        return side
    return None


def pad_for_xnnpack(model):
    """Returns a copy of `model` whose stride-2 convolutions pad symmetrically.

    XNNPACK runs a convolution sparse only with a padding of `k // 2` on every
    side, and Keras's `padding='same'` pads a stride-2 convolution at the
    bottom and right only (on inputs of even size), as do the
    `ZeroPadding2D` layers of `keras.applications` models. This function
    makes such models, MobileNetV2 among them, acceptable to
    `PruneForLatencyOnXNNPack`:

    - a Conv2D or DepthwiseConv2D with a 3x3 or 5x5 kernel, strides 2 and
      `padding='same'` becomes `ZeroPadding2D(k // 2)` followed by the same
      layer with `padding='valid'`;
    - a `ZeroPadding2D` that pads `(k // 2 - 1, k // 2)` in front of a
      `'valid'` stride-2 k x k convolution pads `k // 2` on both sides.

    Output shapes and weights do not change. The outputs do where a padding
    changed (on inputs of even size the windows move by one pixel), so train
    or fine-tune after the rewrite, as pruning does anyway. Nested Sequential
    and functional models are rewritten too; every layer is a copy, holding
    the same weights.

    Args:
        model: a built Sequential or functional `keras.Model`.

    Returns:
        A new, uncompiled `keras.Model`.

    Raises:
        ValueError: for a subclassed or unbuilt model.

    Examples:
        >>> base = keras.applications.MobileNetV2((96, 96, 3), weights=None,
        ...                                       include_top=False)
        >>> ready = pad_for_xnnpack(base)
        >>> ready.get_layer("Conv1").padding
        'valid'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Sequential or functional keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    functional = _graph_model(model)
    if functional is None:
        raise ValueError(
            "`pad_for_xnnpack` rewrites the layer graph of a built Sequential or "
            "functional model. Received: "
            f"model={model.name!r} of class {type(model).__name__}"
            + (" without an input shape" if isinstance(model, keras.Sequential) else "")
        )
    graph = _LayerGraph(functional)
    names = {layer.name for layer in model._flatten_layers(include_self=False)}
    copies, padded, clones = [], {}, {}

    def clone(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer
        if id(layer) in clones:  # a shared layer stays shared
            return clones[id(layer)]
        if isinstance(layer, keras.Model):
            new = pad_for_xnnpack(layer)
        else:
            config = layer.get_config()
            side = _one_sided_padding(layer, graph)
            if side is not None:
                config["padding"] = side
            side = _same_stride_two(layer)
            if side is not None:
                config["padding"] = "valid"
            new = type(layer).from_config(config)
            copies.append((layer, new))
            if side is not None:
                name = f"{layer.name}_pad"
                padded[id(new)] = layers.ZeroPadding2D(
                    side,
                    data_format=layer.data_format,
                    name=None if name in names else name,
                )
        clones[id(layer)] = new
        return new

    def call(layer, *args, **kwargs):
        if id(layer) in padded:
            args = (padded[id(layer)](args[0]), *args[1:])
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        new_layers = []
        for layer in model.layers:
            new = clone(layer)
            if id(new) in padded:
                new_layers.append(padded[id(new)])
            new_layers.append(new)
        rewritten = keras.Sequential(
            [keras.Input(batch_shape=model.inputs[0].shape), *new_layers],
            name=model.name,
        )
    else:
        from keras_pruning.prune import _clone_uncompiled  # prune imports policy

        rewritten = _clone_uncompiled(model, clone_function=clone, call_function=call)
    for layer, new in copies:
        new.set_weights(layer.get_weights())
    return rewritten
