"""Which weights of which layer types are pruned.

Layer types are matched with `isinstance`, so subclasses of supported layers
are prunable too. A custom layer opts in by implementing `PrunableLayer`
(a `get_prunable_weights()` method).
"""

import abc

import keras
from keras import layers

__all__ = (
    "PrunableLayer",
    "get_prunable_weights",
    "is_prunable",
    "is_passthrough",
    "input_channel_axis",
)


class PrunableLayer(abc.ABC):
    """Interface of a custom layer that knows which of its weights to prune.

    Any layer with a `get_prunable_weights()` method is treated as prunable;
    subclassing this class only documents the intent.

    Examples:
        >>> class MyDense(keras.layers.Dense, PrunableLayer):
        ...     def get_prunable_weights(self):
        ...         return [self.kernel]
    """

    @abc.abstractmethod
    def get_prunable_weights(self):
        """Returns the list of variables to prune."""


def _own(*names):
    def getter(layer):
        return [getattr(layer, name) for name in names]

    return getter


def _cells(layer):
    cell = layer.cell
    return cell.cells if isinstance(cell, layers.StackedRNNCells) else [cell]


def _rnn(layer):
    return [w for cell in _cells(layer) for w in get_prunable_weights(cell)]


def _attention(layer):
    sublayers = (
        layer._query_dense,
        layer._key_dense,
        layer._value_dense,
        layer._output_dense,
    )
    return [sub.kernel for sub in sublayers]


def _inner(layer):
    return get_prunable_weights(layer.layer)


def _bidirectional(layer):
    return get_prunable_weights(layer.forward_layer) + get_prunable_weights(
        layer.backward_layer
    )


_CONV_TYPES = (
    layers.Conv1D,
    layers.Conv2D,
    layers.Conv3D,
    layers.Conv1DTranspose,
    layers.Conv2DTranspose,
    layers.Conv3DTranspose,
)

# (layer types, function returning the weights to prune). Order matters:
# the first matching entry wins, so subclasses go before their bases.
_PRUNABLE = [
    ((layers.SeparableConv1D, layers.SeparableConv2D), _own("pointwise_kernel")),
    (_CONV_TYPES, _own("kernel")),
    ((layers.Dense, layers.EinsumDense), _own("kernel")),
    ((layers.Embedding,), _own("embeddings")),
    (
        (layers.SimpleRNNCell, layers.LSTMCell, layers.GRUCell),
        _own("kernel", "recurrent_kernel"),
    ),
    ((layers.RNN,), _rnn),
    ((layers.MultiHeadAttention,), _attention),
    ((layers.Bidirectional,), _bidirectional),
    ((layers.TimeDistributed,), _inner),
]

# Layers with trainable weights that are left dense on purpose.
_PASSTHROUGH = (
    layers.DepthwiseConv1D,
    layers.DepthwiseConv2D,
    layers.BatchNormalization,
    layers.LayerNormalization,
    layers.GroupNormalization,
    layers.UnitNormalization,
)
if hasattr(layers, "RMSNormalization"):
    _PASSTHROUGH += (layers.RMSNormalization,)

SUPPORTED_LAYERS = tuple(t.__name__ for types, _ in _PRUNABLE for t in types)

# Layers whose kernels have a known input-channel axis (for m-by-n sparsity).
_CHANNEL_LAYERS = (
    layers.Dense,
    layers.EinsumDense,
    layers.Conv1D,
    layers.Conv2D,
    layers.Conv3D,
)
CHANNEL_AXIS_LAYERS = tuple(t.__name__ for t in _CHANNEL_LAYERS)


def get_prunable_weights(layer):
    """Returns the variables of `layer` that pruning masks.

    Args:
        layer: a `keras.layers.Layer`.

    Returns:
        A list of variables. A `get_prunable_weights()` method on the layer
        wins over the built-in table.

    Raises:
        ValueError: if the layer type is not supported and has no
            `get_prunable_weights()` method.
    """
    _check_layer(layer)
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built, so it has no weights yet: call "
            "it on an input, or `layer.build(input_shape)`, first."
        )
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        return list(custom())
    if is_prunable(layer):
        getter = next(g for types, g in _PRUNABLE if isinstance(layer, types))
        return getter(layer)
    raise ValueError(_unsupported_message(layer))


def input_channel_axis(layer):
    """The axis of `layer`'s kernel that runs over its input channels.

    `-2` for Dense (`(in, out)`) and Conv1D/2D/3D (`(..., in, out)`) kernels.
    For an EinsumDense, the last kernel axis summed against the input: the
    last letter of the kernel's subscripts that the input has and the output
    has not (`-3` for `"abc,cde->abde"`, a `(c, d, e)` kernel).

    Returns:
        A negative axis, or `None` for other layer types (transposed,
        separable and depthwise convolutions included) and for an EinsumDense
        that sums over no input axis.
    """
    if isinstance(layer, layers.EinsumDense):
        operands, output = layer.equation.split("->")
        source, kernel = operands.split(",")
        summed = [
            i - len(kernel)
            for i, letter in enumerate(kernel)
            if letter in source and letter not in output
        ]
        return summed[-1] if summed else None
    if isinstance(layer, _CHANNEL_LAYERS):
        return -2
    return None


def _sublayers(layer):
    """The layers that a composite entry of the table prunes through."""
    if isinstance(layer, layers.RNN):
        return _cells(layer)
    if isinstance(layer, layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, layers.TimeDistributed):
        return [layer.layer]
    return []


def _check_layer(layer):
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`layer` must be a keras.layers.Layer instance. "
            f"Received: layer={layer!r} (of type {type(layer).__name__})"
        )


def is_prunable(layer):
    """True if `layer` has a `get_prunable_weights()` method, or a supported
    type whose sublayers (RNN cells, wrapped layers) are supported too."""
    _check_layer(layer)
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    if not any(isinstance(layer, types) for types, _ in _PRUNABLE):
        return False
    return all(is_prunable(sub) for sub in _sublayers(layer))


def is_passthrough(layer):
    """True if `layer` is left dense: no trainable weights, or a type kept dense
    on purpose (depthwise convolutions, normalization layers)."""
    _check_layer(layer)
    if isinstance(layer, _PASSTHROUGH):
        return True
    if isinstance(layer, keras.Model):
        return False
    return not layer.trainable_weights if layer.built else not _declares_weights(layer)


def _declares_weights(layer):
    # An unbuilt layer of a weightless built-in type (Dropout, Flatten, ...).
    return type(layer).build is not keras.layers.Layer.build


def _unsupported_message(layer):
    if is_passthrough(layer):
        return (
            f"Layer {layer.name!r} of class {type(layer).__name__} has no weights "
            "that prune_low_magnitude prunes (in a model it is left dense). Wrap "
            "only prunable layers, or prune the whole model."
        )
    inner = [sub for sub in _sublayers(layer) if not is_prunable(sub)]
    detail = (
        f" (its sublayer {inner[0].name!r} of class {type(inner[0]).__name__} is not)"
        if inner
        else ""
    )
    return (
        f"Layer {layer.name!r} of class {type(layer).__name__} has weights but "
        f"is not supported by prune_low_magnitude{detail}. Supported layers (and their "
        f"subclasses): {', '.join(SUPPORTED_LAYERS)}; left dense: "
        f"{', '.join(t.__name__ for t in _PASSTHROUGH)}. To prune a custom layer, "
        "give it a `get_prunable_weights()` method returning the variables to "
        "prune (see keras_pruning.PrunableLayer), or leave it unwrapped."
    )
