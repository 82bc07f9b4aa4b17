"""Per-weight sparsity of a model, pruned or stripped."""

import dataclasses

import keras
import numpy as np

from keras_pruning import registry
from keras_pruning.wrapper import PruneLowMagnitude

__all__ = ("WeightSparsity", "sparsity_report")


@dataclasses.dataclass(frozen=True)
class WeightSparsity:
    """Sparsity of one prunable weight: `sparsity = zeros / size`."""

    layer: str
    weight: str
    shape: tuple
    size: int
    zeros: int

    @property
    def nonzeros(self):
        return self.size - self.zeros

    @property
    def sparsity(self):
        return self.zeros / self.size if self.size else 0.0


def _layers(model):
    if isinstance(model, keras.Model):
        return model._flatten_layers(include_self=False, recursive=True)
    return [model]


def sparsity_report(model):
    """Reports the sparsity of every prunable weight of `model`.

    For a `PruneLowMagnitude` layer the effective weights `w * mask` are
    counted; for a plain (for example stripped) model, the weights of every
    supported layer type.

    Args:
        model: a `keras.Model` or `keras.layers.Layer`.

    Returns:
        A list of `WeightSparsity`, one per prunable weight, in layer order.

    Examples:
        >>> for row in sparsity_report(stripped_model):
        ...     print(row.layer, row.weight, f"{row.sparsity:.0%}")
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model or keras.layers.Layer. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    rows, inside_wrappers = [], set()
    for layer in _layers(model):
        if id(layer) in inside_wrappers:
            continue
        if isinstance(layer, PruneLowMagnitude):
            inside_wrappers.update(
                id(sub) for sub in layer._flatten_layers(include_self=True)
            )
            pairs = zip(layer.prunable_weights, layer.masked_weights(), strict=True)
        elif registry.is_prunable(layer) and layer.built:
            weights = registry.get_prunable_weights(layer)
            inside_wrappers.update(
                id(sub) for sub in layer._flatten_layers(include_self=True)
            )
            pairs = ((w, keras.ops.convert_to_numpy(w)) for w in weights)
        else:
            continue
        for variable, value in pairs:
            rows.append(
                WeightSparsity(
                    layer=layer.name,
                    weight=variable.path,
                    shape=tuple(value.shape),
                    size=int(value.size),
                    zeros=int(value.size - np.count_nonzero(value)),
                )
            )
    return rows
