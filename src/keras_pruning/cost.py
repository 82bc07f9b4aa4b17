"""What a model costs to run: parameters, multiply-accumulates and channels.

Counts are for one input (batch size 1), from the static shapes of the
model's graph. A MAC is one multiply-accumulate; FLOPs are `2 * MACs`. MACs
are counted for Dense and convolution layers (depthwise, separable and
transposed included, in either data format), also inside `TimeDistributed`,
which dominate CNNs and MLPs; other layers count 0.
"""

import dataclasses
import math

import keras
from keras import layers

__all__ = ("LayerCost", "model_cost", "compare_cost")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Cost of one layer.

    Attributes:
        layer: the layer's name.
        kind: the layer's class name.
        params: number of weights (masked ones included).
        macs: multiply-accumulates per input, summed over the layer's calls.
        channels: size of the output's channel axis: the last one, or the
            first for a layer with `data_format="channels_first"`.
    """

    layer: str
    kind: str
    params: int
    macs: int
    channels: int

    @property
    def flops(self):
        return 2 * self.macs


def _prod(values):
    return math.prod(int(v) for v in values)


def _per_step(layer, in_shape, out_shape):
    """`(layer, in_shape, out_shape, steps)`: the layer that computes, its
    shapes (without the batch axis) with channels last, and how many times
    one call runs it (a `TimeDistributed` runs its layer once per step)."""
    if isinstance(layer, layers.TimeDistributed):
        from keras_pruning.structured._graph import _unwrap

        inner, inner_in, inner_out, steps = _per_step(
            _unwrap(layer.layer), in_shape[1:], out_shape[1:]
        )
        return inner, inner_in, inner_out, int(in_shape[0]) * steps
    if getattr(layer, "data_format", None) == "channels_first":
        in_shape = in_shape[1:] + in_shape[:1]
        out_shape = out_shape[1:] + out_shape[:1]
    return layer, in_shape, out_shape, 1


def _macs(layer, in_shape, out_shape):
    """MACs of one call from channels-last shapes without the batch axis."""
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        spatial = _prod(out_shape[:-1])
        mid = in_shape[-1] * layer.depth_multiplier
        return spatial * (_prod(layer.kernel_size) * mid + mid * out_shape[-1])
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return _prod(out_shape) * _prod(layer.kernel_size)
    if isinstance(
        layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
    ):
        return _prod(in_shape) * _prod(layer.kernel_size) * out_shape[-1]
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        groups = getattr(layer, "groups", 1)
        return _prod(out_shape) * _prod(layer.kernel_size) * in_shape[-1] // groups
    if isinstance(layer, layers.Dense):
        return _prod(out_shape) * in_shape[-1]
    return 0


def _calls(model):
    """`(layer, input shape, output shape)` for every call in `model`'s graph,
    nested models included, wrappers unwrapped."""
    from keras_pruning.structured._graph import _graph_of, _unwrap

    graph = _graph_of(model)
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            if isinstance(node.operation, keras.Model):
                yield from _calls(node.operation)
                continue
            inputs, outputs = node.input_tensors, node.outputs
            yield (
                _unwrap(node.operation),
                tuple(inputs[0].shape[1:]) if inputs else (),
                tuple(outputs[0].shape[1:]),
            )


def _check_model(model, argument):
    from keras_pruning.prune import _is_graph_model

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{argument}` must be a Sequential or functional keras.Model. "
            f"Received: {argument}={model!r} (of type {type(model).__name__})"
        )
    if not _is_graph_model(model) or not model.built or not model.inputs:
        raise ValueError(
            "Costs are read from the layer graph of a built Sequential or "
            f"functional model (start it with `keras.Input(shape)`). Received: "
            f"{argument}={model.name!r} of class {type(model).__name__}"
            + ("" if model.built else ", not built")
        )


def model_cost(model):
    """Per-layer parameters, MACs and output channels of `model`.

    Args:
        model: a built Sequential or functional model, pruned (wrappers are
            looked through) or not.

    Returns:
        A list of `LayerCost`, one per layer in graph order.

    Raises:
        ValueError: for a subclassed or unbuilt model, or shapes unknown
            beyond the batch axis.

    Examples:
        >>> rows = model_cost(model)
        >>> sum(r.macs for r in rows) > 0
        True
    """
    _check_model(model, "model")
    rows = {}
    for layer, in_shape, out_shape in _calls(model):
        if None in in_shape or None in out_shape:
            raise ValueError(
                f"Layer {layer.name!r} has unknown shapes {in_shape} -> "
                f"{out_shape}; MACs need static shapes. Build the model with a "
                "fixed `keras.Input(shape)`."
            )
        inner, in_last, out_last, steps = _per_step(layer, in_shape, out_shape)
        macs = steps * _macs(inner, in_last, out_last)
        if id(layer) in rows:  # a shared layer: its calls add up
            row = rows[id(layer)]
            rows[id(layer)] = dataclasses.replace(row, macs=row.macs + macs)
            continue
        rows[id(layer)] = LayerCost(
            layer=layer.name,
            kind=type(layer).__name__,
            params=int(layer.count_params()) if layer.built else 0,
            macs=int(macs),
            channels=int(out_last[-1]) if out_last else 1,
        )
    return list(rows.values())


def compare_cost(before, after):
    """Cost of two models side by side, matched by layer name.

    Args:
        before: the model before pruning.
        after: the pruned (for example channel-pruned) model.

    Returns:
        A dict: `"params"`, `"macs"` and `"flops"` as `(before, after)`
        totals, and `"layers"`, a list of dicts with `layer`, `kind`,
        `channels`, `params` and `macs` as `(before, after)` pairs (None where
        a layer is missing on one side), for layers with weights or MACs.
    """
    _check_model(before, "before")
    _check_model(after, "after")
    old = {r.layer: r for r in model_cost(before)}
    new = {r.layer: r for r in model_cost(after)}
    names = list(old) + [n for n in new if n not in old]
    rows = []
    for name in names:
        a, b = old.get(name), new.get(name)
        if not any(r is not None and (r.params or r.macs) for r in (a, b)):
            continue
        rows.append(
            {
                "layer": name,
                "kind": (a or b).kind,
                **{
                    key: (
                        None if a is None else getattr(a, key),
                        None if b is None else getattr(b, key),
                    )
                    for key in ("channels", "params", "macs")
                },
            }
        )
    totals = {
        key: (
            sum(getattr(r, key) for r in old.values()),
            sum(getattr(r, key) for r in new.values()),
        )
        for key in ("params", "macs")
    }
    totals["flops"] = tuple(2 * m for m in totals["macs"])
    return {**totals, "layers": rows}
