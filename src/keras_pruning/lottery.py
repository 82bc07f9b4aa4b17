"""Lottery tickets: iterative magnitude pruning with weight rewinding.

Frankle and Carbin (2019) found that a dense network contains sparse
subnetworks, "winning tickets", that train to the dense accuracy from the
dense network's initial weights; Frankle et al. (2020) rewind to the weights
of an early training step `k` instead of step 0 ("late rewinding"), which
finds tickets in deeper networks too. With `p` the fraction of the remaining
weights pruned per round, iterative magnitude pruning (IMP) is:

1. train the dense network, keeping its weights `w_k` after `k` steps;
2. for rounds `r = 1, ..., R`: prune every wrapped weight tensor to
   sparsity `s_r = 1 - (1 - p) ** r` by the magnitude of its trained weights
   (pruned weights stay pruned), rewind the weights to `mask * w_k`, and
   train again with the masks fixed.

`find_ticket` runs this loop; `prepare`, `snapshot`, `update_masks`,
`rewind` and `RewindCheckpoint` are its parts, for a loop of your own. They
work on the `PruneLowMagnitude` wrappers of a model, and use `keras.ops` only.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_pruning.callbacks import UpdatePruningStep, _CountingTrainedBatches
from keras_pruning.masks import apply_mask
from keras_pruning.prune import prune_low_magnitude, pruning_wrappers
from keras_pruning.schedules import ConstantSparsity, _check_int

__all__ = (
    "RewindCheckpoint",
    "RoundResult",
    "Ticket",
    "find_ticket",
    "prepare",
    "rewind",
    "round_sparsity",
    "snapshot",
    "update_masks",
)


def _check_rate(rate):
    message = (
        "`rate` is the fraction of the remaining weights pruned per round, a "
        f"float in (0, 1). Received: rate={rate!r}"
    )
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(message)
    if math.isnan(rate) or not 0.0 < rate < 1.0:
        raise ValueError(message)
    return float(rate)


def round_sparsity(rate, round_index):
    """The sparsity after `round_index` rounds that each prune `rate` of the
    remaining weights: `s_r = 1 - (1 - rate) ** r`, rounded to 12 decimals.

    Args:
        rate: the fraction of the remaining weights pruned per round, in (0, 1).
        round_index: the number of pruning rounds, an integer >= 0.

    Returns:
        A float in [0, 1).

    Examples:
        >>> round_sparsity(0.2, 3)  # 1 - 0.8 ** 3
        0.488
    """
    rate = _check_rate(rate)
    round_index = _check_int("round_index", round_index, 0)
    return round(1.0 - (1.0 - rate) ** round_index, 12)


def _wrappers(model, function):
    wrappers = pruning_wrappers(model)
    if not wrappers:
        raise ValueError(
            f"`{function}` works on the PruneLowMagnitude layers of a model, and "
            f"model {model.name!r} has none: wrap it first with "
            "`keras_pruning.lottery.prepare(model)`. Received: "
            f"model={model.name!r}"
        )
    return wrappers


def _rewindable(model):
    """Every variable of `model` but the wrappers' masks and thresholds, in
    `model.variables` order: the same list for a plain model and for its
    pruned version."""
    own = {id(v) for w in pruning_wrappers(model) for v in (*w.masks, *w.thresholds)}
    return [v for v in model.variables if id(v) not in own]


def prepare(model, layers=None):
    """Wraps `model` for lottery-ticket rounds, with masks that only change
    when `update_masks` is called.

    Every prunable layer (or those `layers` selects, as in
    `prune_low_magnitude`) gets a `PruneLowMagnitude` wrapper whose schedule,
    `ConstantSparsity(0.0, begin_step=0, end_step=0)`, never updates masks
    during training. Train it with `UpdatePruningStep`, as any pruned model.
    The returned model shares its layers, and so its weights, with `model`.

    Args:
        model: a Sequential or functional `keras.Model`.
        layers: which layers to prune: names, classes or a predicate.
            Defaults to `None` (every prunable layer).

    Returns:
        A new `keras.Model` with dense (all-ones) masks.

    Examples:
        >>> pruned = prepare(model)
        >>> update_masks(pruned, 0.2)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Sequential or functional keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    return prune_low_magnitude(
        model, ConstantSparsity(0.0, begin_step=0, end_step=0), layers=layers
    )


def snapshot(model):
    """Copies every weight of `model` except pruning masks and thresholds.

    The copies come in `model.variables` order, which is the same for a
    plain model and for its pruned version: a snapshot of a freshly built
    plain model can be rewound into a pruned one (the random
    re-initialization control of the lottery-ticket experiments).

    Args:
        model: a built `keras.Model`, pruned or not.

    Returns:
        A list of NumPy arrays.
    """
    return [ops.convert_to_numpy(v) for v in _rewindable(model)]


def update_masks(model, sparsity):
    """Prunes every wrapped weight tensor of `model` to `sparsity`, by magnitude.

    Calls `PruneLowMagnitude.update_masks` on each wrapper: each tensor keeps
    its `k = max(round(n * (1 - sparsity)), 1)` largest effective weights
    `|w * mask|`, so a weight pruned earlier stays pruned while `sparsity`
    grows, and pruned weights are set to zero.

    Args:
        model: a model with `PruneLowMagnitude` layers (see `prepare`).
        sparsity: the fraction of each tensor to prune, in [0, 1).

    Raises:
        ValueError: if `model` has no wrappers or `sparsity` is not in [0, 1).
    """
    for wrapper in _wrappers(model, "update_masks"):
        wrapper.update_masks(sparsity)


def rewind(model, weights):
    """Writes `weights` (from `snapshot`) into `model`, keeping its masks.

    Every variable but the masks and thresholds is set to its saved value,
    batch-normalization statistics included; the pruned weights are then
    zeroed, so each wrapped weight becomes `mask * saved`.

    Args:
        model: a model with `PruneLowMagnitude` layers.
        weights: a list of arrays from `snapshot`, of the same architecture.

    Raises:
        ValueError: if the number or the shapes of `weights` do not match.
    """
    wrappers = _wrappers(model, "rewind")
    variables = _rewindable(model)
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            "`weights` must be the list that `snapshot(model)` returns. "
            f"Received: weights of type {type(weights).__name__}"
        )
    if len(weights) != len(variables):
        raise ValueError(
            f"`weights` must hold one array per weight of model {model.name!r} "
            f"(masks and thresholds excepted): {len(variables)}. Received: "
            f"{len(weights)} arrays"
        )
    for variable, value in zip(variables, weights, strict=True):
        if tuple(np.shape(value)) != tuple(variable.shape):
            raise ValueError(
                f"`weights` does not match model {model.name!r}: variable "
                f"{variable.path!r} has shape {tuple(variable.shape)}. Received: "
                f"an array of shape {tuple(np.shape(value))}"
            )
    for variable, value in zip(variables, weights, strict=True):
        variable.assign(value)
    for wrapper in wrappers:
        for weight, mask in zip(wrapper.prunable_weights, wrapper.masks, strict=True):
            weight.assign(apply_mask(weight, mask))


class RewindCheckpoint(_CountingTrainedBatches):
    """Keeps a `snapshot` of the model's weights after `step` training batches.

    The rewind point of late rewinding: with `step=0` the snapshot is taken
    when training begins (the original lottery tickets); with `step=k`,
    before the `(k + 1)`-th batch, or when training ends after exactly `k`
    batches. Batches are counted across `fit()` calls (one per batch, with
    the default `steps_per_execution=1`); a batch that `fit` begins but never
    trains, when data of unknown length runs out, does not count.

    Args:
        step: the number of training batches before the snapshot, >= 0.
            Defaults to `0`.

    Attributes:
        weights: the snapshot, or `None` until it is taken.
        batches_seen: the training batches counted so far.

    Examples:
        >>> checkpoint = RewindCheckpoint(step=100)
        >>> model.fit(x, y, callbacks=[UpdatePruningStep(), checkpoint])
        >>> rewind(model, checkpoint.weights)
    """

    def __init__(self, step=0):
        super().__init__()
        self.step = _check_int("step", step, 0)
        self.weights = None
        self.batches_seen = 0

    def _take(self):
        if self.weights is None and self.batches_seen == self.step:
            self.weights = snapshot(self.model)

    def on_train_begin(self, logs=None):
        self._start_counting()
        self._take()

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begun()
        self._take()
        self.batches_seen += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._untrained_batch():  # its snapshot, if taken, is right
            self.batches_seen -= 1

    def on_train_end(self, logs=None):
        self._take()


def _measured_sparsity(model):
    """The fraction of masked-out weights over every wrapped weight tensor."""
    masks = [m for w in pruning_wrappers(model) for m in w.masks]
    kept = sum(int(ops.sum(ops.cast(m, "int32"))) for m in masks)
    total = sum(math.prod(m.shape) for m in masks)
    return 1.0 - kept / total


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """One round of `find_ticket`.

    Attributes:
        round: 0 for the dense training, then 1, 2, ...
        sparsity: the measured fraction of pruned weights over every wrapped
            tensor: `round_sparsity(rate, round)` up to each tensor's rounding.
        metrics: what `evaluate(model)` returned after the round's training,
            or None without `evaluate`.
    """

    round: int
    sparsity: float
    metrics: object = None


@dataclasses.dataclass(frozen=True)
class Ticket:
    """The result of `find_ticket`.

    Attributes:
        model: the pruned model after the last round, trained, with its
            `PruneLowMagnitude` wrappers (`strip_pruning` it to deploy).
        rewind_weights: the snapshot of step `rewind_step` that every round
            rewound to.
        rounds: one `RoundResult` per round, the dense round 0 first.
    """

    model: keras.Model
    rewind_weights: list
    rounds: tuple


def find_ticket(
    model, train, rounds, rate, *, rewind_step=0, evaluate=None, layers=None
):
    """Iterative magnitude pruning with rewinding: finds a lottery ticket.

    Wraps `model` with `prepare`, trains it dense once (round 0) while a
    `RewindCheckpoint` keeps the weights `w_k` of step `rewind_step`; then,
    for each round `r = 1, ..., rounds`, prunes every wrapped tensor to
    `s_r = 1 - (1 - rate) ** r` by the magnitude of its trained weights
    (`update_masks`), rewinds to `mask * w_k` (`rewind`) and trains again.
    Training always starts from the same `w_k`; only the masks shrink.

    Args:
        model: a Sequential or functional `keras.Model`, not yet pruned. Its
            layers are shared with the returned model.
        train: a function `train(model, callbacks)` that trains the model for
            one round, passing `callbacks` (an `UpdatePruningStep`, and in
            round 0 the `RewindCheckpoint`) to `fit`. Compile in it: each
            round then starts with a fresh optimizer.
        rounds: the number of pruning rounds after the dense round, >= 1.
        rate: the fraction of the remaining weights pruned per round, in
            (0, 1); Frankle and Carbin use 0.2.
        rewind_step: the training step to rewind to; 0 rewinds to the
            initial weights. Defaults to `0`.
        evaluate: a function `evaluate(model) -> metrics`, called after each
            round's training. Defaults to `None`.
        layers: which layers to prune, as in `prune_low_magnitude`.
            Defaults to `None` (every prunable layer).

    Returns:
        A `Ticket`: the final model, the rewind weights, and one
        `RoundResult` per round.

    Raises:
        TypeError, ValueError: for invalid arguments, or if round 0 trained
            fewer than `rewind_step` batches.

    Examples:
        >>> def train(model, callbacks):
        ...     model.compile("adam", "sparse_categorical_crossentropy")
        ...     model.fit(x, y, epochs=2, callbacks=callbacks, verbose=0)
        >>> ticket = find_ticket(model, train, rounds=5, rate=0.2, rewind_step=100)
        >>> [round(r.sparsity, 3) for r in ticket.rounds]
        [0.0, 0.2, 0.36, 0.488, 0.59, 0.672]
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if not callable(train):
        raise TypeError(
            "`train` must be a function `train(model, callbacks)`. "
            f"Received: train={train!r}"
        )
    if evaluate is not None and not callable(evaluate):
        raise TypeError(
            "`evaluate` must be a function `evaluate(model)` or None. "
            f"Received: evaluate={evaluate!r}"
        )
    rounds = _check_int("rounds", rounds, 1)
    rate = _check_rate(rate)
    checkpoint = RewindCheckpoint(_check_int("rewind_step", rewind_step, 0))

    pruned = prepare(model, layers=layers)
    if not pruning_wrappers(pruned):
        raise ValueError(
            f"`layers` selects no prunable layer of model {model.name!r}. "
            f"Received: layers={layers!r}"
        )
    results = []

    def finish_round(index):
        metrics = None if evaluate is None else evaluate(pruned)
        results.append(RoundResult(index, _measured_sparsity(pruned), metrics))

    train(pruned, [UpdatePruningStep(), checkpoint])
    if checkpoint.weights is None:
        raise ValueError(
            f"`rewind_step` must be at most the number of batches of round 0, "
            f"which trained {checkpoint.batches_seen}. Received: "
            f"rewind_step={rewind_step}"
        )
    finish_round(0)
    for index in range(1, rounds + 1):
        update_masks(pruned, round_sparsity(rate, index))
        rewind(pruned, checkpoint.weights)
        train(pruned, [UpdatePruningStep()])
        finish_round(index)
    return Ticket(pruned, checkpoint.weights, tuple(results))
