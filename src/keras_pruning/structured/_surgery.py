"""Surgery: rebuild a model with the removed channels cut out of its layers."""

import keras
import numpy as np

from keras_pruning.structured._graph import _graph_of, _unwrap, layer_weights

# Config keys holding the number of channels a layer makes.
_SIZE_KEYS = ("units", "filters")


def shrink(model, analysis, keep):
    """A new model of plain Keras layers without the channels `keep` drops.

    Args:
        model: the traced model (no pruning wrappers).
        analysis: its `Analysis`.
        keep: `{group id: boolean vector over the group's channels}`; groups
            absent from it keep every channel.

    Returns:
        A new, uncompiled model with the same structure (nested models stay
        nested) whose layers are smaller and hold the kept weights.
    """
    maps_of = {id(layer): maps for layer, maps in analysis.calls}
    pairs = []
    cache = {}

    def kept(channel_map):
        return analysis.keep_positions(channel_map, keep)

    def new_layer(layer):
        if id(layer) in cache:
            return cache[id(layer)]
        if isinstance(layer, keras.Model):
            new = rebuild(layer)
        else:
            config = layer.get_config()
            maps = maps_of.get(id(layer))
            if maps is not None:
                out_size = int(kept(maps["out"]).sum())
                for key in _SIZE_KEYS:
                    if key in config and isinstance(config[key], int):
                        config[key] = out_size
                if isinstance(layer, keras.layers.Reshape) and (
                    config["target_shape"][-1] != -1
                ):
                    config["target_shape"] = (*config["target_shape"][:-1], out_size)
            new = type(layer).from_config(config)
            if isinstance(layer, keras.layers.Layer):  # not a keras.ops operation
                pairs.append((layer, new, maps))
        cache[id(layer)] = new
        return new

    def new_input(tensor):
        maps = analysis.maps.get(id(tensor))
        shape = tuple(tensor.shape)
        if maps is not None and len(shape) > 1:  # (batch,) has no channel axis
            shape = (*shape[:-1], int(kept(maps).sum()))
        history = getattr(tensor, "_keras_history", None)
        name = history[0].name if history else None
        return keras.Input(batch_shape=shape, dtype=tensor.dtype, name=name)

    def rebuild(model):
        graph = _graph_of(model)
        if isinstance(model, keras.Sequential):
            layers = [new_layer(_unwrap(layer)) for layer in model.layers]
            return keras.Sequential(
                [new_input(graph.inputs[0]), *layers], name=model.name
            )
        inputs = [new_input(t) for t in graph.inputs]
        outputs = graph._run_through_graph(
            inputs, operation_fn=lambda op: new_layer(_unwrap(op))
        )
        inputs = keras.tree.pack_sequence_as(graph._inputs_struct, inputs)
        return keras.Model(inputs, outputs, name=model.name)

    result = rebuild(model)
    for old, new, maps in pairs:
        new.set_weights(_sliced_weights(old, maps, kept))
    return result


def _sliced_weights(layer, maps, kept):
    axes_of = {id(v): axes for v, axes, _ in layer_weights(layer)}
    values = []
    for variable in layer.weights:
        value = keras.ops.convert_to_numpy(variable)
        for axis, key in axes_of.get(id(variable), {}).items():
            if maps is not None:
                value = np.compress(kept(maps[key]), value, axis=axis)
        values.append(value)
    return values
