"""Sensitivity analysis: how much each layer can be pruned on its own.

`sensitivity` prunes one layer at a time, one-shot, at each of a few
sparsities, and evaluates the model; `SensitivityTable.plan` turns the table
into a per-layer sparsity plan under a metric budget, ready for a dict
`pruning_schedule`.
"""

import dataclasses
import io
import numbers

import keras
import numpy as np

from keras_pruning._files import check_overwrite, check_path, write_atomic
from keras_pruning.masks import apply_mask, magnitude_mask
from keras_pruning.oneshot import _selected_layers
from keras_pruning.prune import (
    _check_built,
    _check_selected_names,
    _is_graph_model,
    _selection,
    pruning_wrappers,
)
from keras_pruning.schedules import _check_int, _check_sparsity

__all__ = ("SensitivityTable", "sensitivity")

_METRICS = ("accuracy",)


@dataclasses.dataclass(frozen=True)
class SensitivityTable:
    """The result of `sensitivity`: `scores[layer][i]` is the metric with only
    `layer` pruned to `sparsities[i]`, and `baseline` the unpruned metric.

    Attributes:
        baseline: the metric of the model as given.
        sparsities: the sparsities tried, in increasing order.
        scores: layer name -> one metric value per sparsity.
        metric: the metric's name.
        higher_is_better: whether a larger metric is better (accuracy) or
            worse (a loss).
    """

    baseline: float
    sparsities: tuple
    scores: dict
    metric: str
    higher_is_better: bool = True

    def drop(self, layer):
        """How much worse than the baseline each sparsity makes `layer`
        (positive: worse)."""
        sign = 1.0 if self.higher_is_better else -1.0
        return [sign * (self.baseline - score) for score in self.scores[layer]]

    def plan(self, max_drop):
        """The largest tried sparsity per layer whose drop is at most `max_drop`.

        A layer is only given sparsity `s` if every smaller tried sparsity is
        within budget too. Layers with no sparsity in budget get 0.0.

        Args:
            max_drop: allowed metric drop per layer, e.g. `0.01` for one point
                of accuracy.

        Returns:
            A dict, layer name -> sparsity.
        """
        if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real):
            raise TypeError(
                "`max_drop` must be a non-negative number. Received: "
                f"max_drop={max_drop!r} (of type {type(max_drop).__name__})"
            )
        if not max_drop >= 0:  # NaN too
            raise ValueError(
                f"`max_drop` must be a non-negative number. Received: max_drop={max_drop!r}"
            )
        plan = {}
        for layer in self.scores:
            chosen = 0.0
            for sparsity, drop in zip(self.sparsities, self.drop(layer), strict=True):
                if not drop <= max_drop:  # a NaN score is out of budget
                    break
                chosen = sparsity
            plan[layer] = chosen
        return plan

    def to_markdown(self):
        """The table as Markdown: one row per layer, one column per sparsity."""
        header = ["layer", *(f"{s:.0%}" for s in self.sparsities)]
        lines = [
            f"{self.metric} with one layer pruned (unpruned: {self.baseline:.4f})",
            "",
            "| " + " | ".join(header) + " |",
            "|" + " --- |" * len(header),
        ]
        for layer, scores in self.scores.items():
            lines.append(
                "| " + " | ".join([layer, *(f"{v:.4f}" for v in scores)]) + " |"
            )
        return "\n".join(lines) + "\n"


def _metric_function(metric):
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    if metric == "accuracy":

        def accuracy(y_true, y_pred):
            # As Keras's "accuracy": one output column (or none) is a
            # probability (threshold 0.5); one-hot labels are compared by
            # their argmax.
            y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
            if y_pred.ndim == 1 or y_pred.shape[-1] == 1:
                predicted = (y_pred.reshape(-1) > 0.5).astype(y_true.dtype)
            else:
                predicted = y_pred.argmax(-1)
                if y_true.ndim == y_pred.ndim and y_true.shape[-1] == y_pred.shape[-1]:
                    y_true = y_true.argmax(-1)
            predicted = predicted.reshape(-1)
            if y_true.size != predicted.size:
                raise ValueError(
                    '`metric="accuracy"` needs one label (a class index, or a '
                    "one-hot row) per prediction: the model predicts "
                    f"{predicted.size}. Received: labels of shape {y_true.shape}"
                )
            return float(np.mean(predicted == y_true.reshape(-1)))

        return "accuracy", accuracy
    raise ValueError(
        f"`metric` must be one of {_METRICS} or a function (y_true, y_pred) -> "
        f"float. Received: metric={metric!r}"
    )


def _check_data(data):
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            "`data` must be a pair `(x, y)` of arrays. "
            f"Received: data of type {type(data).__name__}"
        )
    x, y = data
    if isinstance(y, (list, tuple)):
        y = np.asarray(y)
    inputs = keras.tree.flatten(x)  # one array per model input
    if not (inputs and all(hasattr(a, "shape") for a in [*inputs, y])):
        raise TypeError(
            "`data` must be a pair `(x, y)` of arrays (x: a list or dict of "
            "arrays for several inputs). Received: data of types "
            f"({type(x).__name__}, {type(y).__name__})"
        )
    samples = {len(a) for a in inputs}
    if samples != {len(y)} or len(y) == 0:
        raise ValueError(
            "`data` must hold as many labels as samples of every input, at "
            f"least one. Received: {sorted(samples)} samples and {len(y)} labels"
        )
    return x, y


def _check_sparsities(sparsities):
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise TypeError(
            f"`sparsities` must be a list of floats in [0, 1). Received: sparsities={sparsities!r}"
        )
    values = sorted({_check_sparsity("sparsities", s) for s in sparsities})
    if not values:
        raise ValueError("`sparsities` is empty. Received: sparsities=()")
    return tuple(values)


def sensitivity(
    model,
    data,
    sparsities=(0.25, 0.5, 0.75, 0.9),
    *,
    metric="accuracy",
    higher_is_better=True,
    layers=None,
    batch_size=256,
    plot=None,
    overwrite=False,
    verbose=1,
):
    """Prunes each layer alone, one-shot, at each sparsity, and evaluates.

    For every selected prunable layer and every sparsity `s`, the layer's
    prunable weights keep their `k = max(round(n * (1 - s)), 1)` largest
    magnitudes (all other layers untouched), and the model is evaluated on
    `data`. `model`'s weights are restored afterwards, even on error.

    Args:
        model: a built Sequential or functional `keras.Model`, without wrappers.
        data: `(x, y)`: inputs and labels to evaluate on.
        sparsities: the sparsities to try, each in [0, 1). Defaults to
            `(0.25, 0.5, 0.75, 0.9)`.
        metric: `"accuracy"` (as Keras's: the argmax of the output, or a
            single output column thresholded at 0.5, against integer or
            one-hot labels), or a function `(y_true, y_pred) -> float` on
            NumPy arrays. Defaults to `"accuracy"`.
        higher_is_better: whether a larger metric is better. Defaults to `True`.
        layers: which layers to analyse, as in `prune_low_magnitude`: a name,
            a class, a list of them, or a predicate. Defaults to `None` (all).
        batch_size: prediction batch size. Defaults to `256`.
        plot: a `.png` path: one line per layer, metric against sparsity
            (needs matplotlib), written atomically. Defaults to `None`.
        overwrite: with `plot`, replace an existing file. Defaults to `False`.
        verbose: `1` shows a progress bar, `0` nothing. Defaults to `1`.

    Returns:
        A `SensitivityTable`.

    Examples:
        >>> table = sensitivity(model, (x_val, y_val), plot="sensitivity.png")
        >>> plan = table.plan(max_drop=0.01)   # {"dense": 0.9, "dense_1": 0.5}
        >>> schedules = {name: ConstantSparsity(s, 0) for name, s in plan.items() if s}
        >>> pruned = prune_low_magnitude(model, schedules)
    """
    if not isinstance(model, keras.Model) or not _is_graph_model(model):
        raise TypeError(
            "`model` must be a Sequential or functional keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    if pruning_wrappers(model):
        raise ValueError(
            f"Model {model.name!r} holds PruneLowMagnitude layers: analyse the "
            "model before pruning, or `strip_pruning(model)` first."
        )
    _check_built(model)
    x, y = _check_data(data)
    sparsities = _check_sparsities(sparsities)
    metric_name, metric_fn = _metric_function(metric)
    if not isinstance(higher_is_better, bool):
        raise TypeError(
            "`higher_is_better` must be True or False. "
            f"Received: higher_is_better={higher_is_better!r}"
        )
    batch_size = _check_int("batch_size", batch_size, 1)
    if not isinstance(verbose, numbers.Integral) or verbose not in (0, 1):
        raise ValueError(f"`verbose` must be 0 or 1. Received: verbose={verbose!r}")
    if plot is not None:
        plot = check_path(plot, "plot")
        if not plot.endswith(".png"):
            raise ValueError(
                f"`plot` must be a path ending in .png. Received: plot={plot!r}"
            )
    check_overwrite([] if plot is None else [plot], overwrite)
    select = _selection(layers, None)
    _check_selected_names(model, layers)
    selected = _selected_layers(model, model, select)
    if not selected:
        raise ValueError(
            f"No prunable layers selected in {model.name!r}. Received: layers={layers!r}"
        )
    names = [layer.name for layer, _ in selected]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise ValueError(
            f"Layers of nested models share the names {shared}: sensitivity "
            "results are keyed by layer name. Rename them, or leave all but "
            f"one out with a `layers=` function. Received: layers={layers!r}"
        )

    def evaluate():
        return float(metric_fn(y, model.predict(x, batch_size=batch_size, verbose=0)))

    baseline = evaluate()
    progress = keras.utils.Progbar(len(selected) * len(sparsities)) if verbose else None
    scores = {}
    for layer, weights in selected:
        originals = [keras.ops.copy(w.value) for w in weights]
        row = []
        try:
            for sparsity in sparsities:
                for weight, original in zip(weights, originals, strict=True):
                    mask, _ = magnitude_mask(original, sparsity)
                    weight.assign(apply_mask(original, mask))
                row.append(evaluate())
                if progress is not None:
                    progress.add(1)
        finally:
            for weight, original in zip(weights, originals, strict=True):
                weight.assign(original)
        scores[layer.name] = row
    table = SensitivityTable(
        baseline, sparsities, scores, metric_name, higher_is_better
    )
    if plot is not None:
        _plot(table, plot, overwrite)
    return table


def _plot(table, path, overwrite):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "`plot=` needs matplotlib: pip install 'keras-pruning[examples]'."
        ) from None
    # A bare Figure, not pyplot: no backend switch in the caller's session.
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    percent = [100 * s for s in table.sparsities]
    for layer, scores in table.scores.items():
        axis.plot(percent, scores, marker="o", label=layer)
    axis.axhline(table.baseline, color="gray", linestyle="--", label="unpruned")
    axis.set_xlabel("sparsity of the one pruned layer (%)")
    axis.set_ylabel(table.metric)
    axis.set_title("Sensitivity to pruning, one layer at a time")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_atomic(path, buffer.getvalue(), overwrite=overwrite)
