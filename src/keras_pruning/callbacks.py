"""Training callbacks: `UpdatePruningStep` drives the masks, `PruningSummaries`
logs them to TensorBoard."""

import importlib.util
import os
import warnings

import keras
from keras import ops

from keras_pruning._global_masks import GlobalMasks
from keras_pruning._optimizer_slots import (
    clear_pruned_moments,
    holds_pruned_weights_at_zero,
)
from keras_pruning._trainer import sync_trainer_state
from keras_pruning.criteria import _needs_gradients
from keras_pruning.prune import pruning_wrappers
from keras_pruning.wrapper import (
    PruneLowMagnitude,
    _check_pruned_at_zero,
    _pruned_at_zero,
    _update_unstructured,
)

__all__ = ("UpdatePruningStep", "PruningSummaries")


def _find_wrappers(model, callback_name):
    wrappers = pruning_wrappers(model)
    if not wrappers:
        raise ValueError(
            f"{callback_name} was given model {model.name!r}, which has no "
            "PruneLowMagnitude layers. Prune it first with "
            "`keras_pruning.prune_low_magnitude(model)`."
        )
    return wrappers


def _check_single_use(model, wrappers):
    """ValueError if a wrapper that accumulates gradients runs more than once
    per step: its accumulator would count its past gradients twice."""
    if not any(w._gradients for w in wrappers):
        return
    uses = {}

    def walk(model, times):
        graph = model._functional if isinstance(model, keras.Sequential) else model
        nodes = [
            node
            for depth in getattr(graph, "_nodes_by_depth", {}).values()
            for node in depth
            if node.operation is not None and not node.is_input
        ]
        calls = [node.operation for node in nodes] or model.layers
        for operation in calls:
            if isinstance(operation, keras.Model):
                walk(operation, times)
            else:
                uses[id(operation)] = uses.get(id(operation), 0) + times

    walk(model, 1)
    shared = [w.name for w in wrappers if w._gradients and uses.get(id(w), 1) > 1]
    if shared:
        raise ValueError(
            f"Layers {shared} are called more than once per step, and their "
            "criterion accumulates gradients, which a shared layer cannot do. "
            "Prune them with criterion='magnitude'."
        )


def _check_accumulating_optimizer(model, wrappers):
    """ValueError if the optimizer would not write a step's gradients into
    the criteria's accumulators as they are: a LossScaleOptimizer leaves
    them scaled by the loss scale of each step, gradient accumulation writes
    its running max."""
    accumulating = [w.name for w in wrappers if _needs_gradients(w.criterion)]
    optimizer = getattr(model, "optimizer", None)
    if not accumulating or optimizer is None:
        return
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        problem = "a LossScaleOptimizer (as with mixed_float16)"
    elif getattr(optimizer, "gradient_accumulation_steps", None):
        problem = "gradient_accumulation_steps"
    else:
        return
    raise ValueError(
        f"Layers {accumulating} sum gradients for their criterion through the "
        f"optimizer's step, which {problem} would corrupt. Train them in "
        "float32 with a plain Keras optimizer, or use criterion='magnitude'. "
        f"Received: optimizer={type(optimizer).__name__}"
    )


def _wrappers_of(unit):
    """The wrappers whose masks one mask update of `unit` sets."""
    return unit.wrappers if isinstance(unit, GlobalMasks) else [unit]


def _require_tensorboard():
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "PruningSummaries writes TensorBoard logs and needs the `tensorboard` "
            "package: pip install 'keras-pruning[tensorboard]'."
        )


class _CountingTrainedBatches(keras.callbacks.Callback):
    """A callback that finds the batch `fit` begins but never trains.

    When data of unknown length runs out, `fit` on JAX and TensorFlow calls
    `on_train_batch_begin` once more than it trains (so does any backend when
    `steps_per_epoch` outlasts the data). Subclasses call `_start_counting()`
    in `on_train_begin`, `_batch_begun()` in `on_train_batch_begin`, and
    `_untrained_batch()` in `on_epoch_end`. A custom loop that never calls
    `on_train_batch_end` has no batch found untrained.
    """

    # `on_train_batch_end` only counts: Keras may call it from another
    # thread, after the step, without fetching each step's logs first. The
    # count is read at the end of the epoch, when those calls have run.
    async_safe = True

    def __init__(self):
        super().__init__()
        self._start_counting()

    def _start_counting(self):
        self._batches_begun = self._batches_ended = 0
        self._ends_seen = False

    def on_epoch_begin(self, epoch, logs=None):
        self._batches_begun = self._batches_ended = 0

    def _batch_begun(self):
        self._batches_begun += 1

    def on_train_batch_end(self, batch, logs=None):
        self._batches_ended += 1
        self._ends_seen = True

    def _untrained_batch(self):
        """Whether the epoch's last batch began and never trained (while the
        ends of batches are reported); starts counting the next epoch."""
        untrained = self._ends_seen and (self._batches_begun == self._batches_ended + 1)
        self._batches_begun = self._batches_ended = 0
        return untrained


class UpdatePruningStep(_CountingTrainedBatches):
    """Steps the model's pruning schedule once per training batch.

    One step counter serves the whole model: a shared layer, or a layer called
    twice per batch, advances once. The first training batch is step 1; steps
    carry over across `fit()` calls and across save and load (the step is
    read at the first batch, after `BackupAndRestore` restores it, whatever
    the order of the callbacks; list this callback before those that save
    the model at the end of an epoch, so that they save the step of the
    last trained batch). Before each batch
    whose step a wrapper's schedule selects, that wrapper's masks are
    recomputed from the current weights (between steps, so on every backend).
    A model that is only built by its first training step (a Sequential
    model without an `Input`) gets the updates due at that step right after it.

    In a custom training loop, call `set_model(model)` and `on_train_begin()`
    once, then `on_train_batch_begin(batch)` before every step. With `fit`,
    the model must be compiled with `steps_per_execution=1` (the default):
    Keras calls the callback once per execution.

    Args:
        hold_pruned_weights_at_zero: an opt-in speed-up. If True, and the
            model's optimizer is one whose step leaves a weight with zero
            gradient and zero first moments at 0 (Keras's Adam, AdamW, Nadam,
            Adamax, Lion, RMSprop, SGD, Adagrad or Adadelta, without
            `use_ema` or gradient accumulation), and no pruned weight has a
            constraint or a regularizer other than L2, pruned weights are
            held at exactly 0 during training (set, with their first
            moments, at the first batch, and by every mask update), and each
            training step masks only their gradients, skipping the product
            `w * mask` of the forward pass. Mask updates and `on_train_end`
            check that the pruned weights are still 0 and raise ValueError
            if something else wrote them. Only the model's optimizer may
            write pruned weights while training; a training step traced
            while holding keeps skipping the product until the callback
            traces it again, so after a `fit` that stopped on an error, or
            for training without this callback, use a new callback with the
            default. Defaults to False: every training step masks the
            weights, as TFMOT does, whatever writes them.

    Examples:
        >>> model.fit(x, y, callbacks=[keras_pruning.UpdatePruningStep()])
    """

    def __init__(self, hold_pruned_weights_at_zero=False):
        super().__init__()
        if not isinstance(hold_pruned_weights_at_zero, bool):
            raise TypeError(
                "`hold_pruned_weights_at_zero` must be True or False. Received: "
                f"hold_pruned_weights_at_zero={hold_pruned_weights_at_zero!r}"
            )
        self.hold_pruned_weights_at_zero = hold_pruned_weights_at_zero
        self._holding = False
        self._wrappers = None
        self._channel_masks = None
        self._units = []
        self._step = None
        self._step_read = False
        self._updated = False
        self._pending = []
        self._updated_before_batch = False

    def set_model(self, model):
        super().set_model(model)
        self._wrappers = None

    def on_train_begin(self, logs=None):
        if self.model is None:
            raise ValueError(
                "UpdatePruningStep has no model: call `set_model(model)` before "
                "`on_train_begin()` in a custom training loop."
            )
        steps = getattr(self.model, "steps_per_execution", 1)
        if self.params and steps != 1:  # in fit, which sets `params`
            raise ValueError(
                "UpdatePruningStep counts one pruning step per training batch, "
                "but with steps_per_execution > 1 Keras calls it once per "
                f"{steps} batches: the schedule would run {steps} times too "
                "slowly. Compile the model with steps_per_execution=1 (the "
                f"default). Received: steps_per_execution={steps}"
            )
        self._wrappers = _find_wrappers(self.model, "UpdatePruningStep")
        _check_single_use(self.model, self._wrappers)
        _check_accumulating_optimizer(self.model, self._wrappers)
        channel = [w for w in self._wrappers if w.granularity == "channel"]
        self._channel_masks = None
        if channel:
            from keras_pruning.structured._gradual import ChannelMasks

            self._channel_masks = ChannelMasks(self.model, channel)
        # What one mask update sets: a local wrapper, or all global ones.
        weight = [w for w in self._wrappers if w.granularity == "weight"]
        self._units = [w for w in weight if not w.global_pruning]
        global_ = [w for w in weight if w.global_pruning]
        if global_:
            self._units.append(GlobalMasks(global_))
        self._step = self._model_step()
        self._holding = self.hold_pruned_weights_at_zero and (
            holds_pruned_weights_at_zero(
                getattr(self.model, "optimizer", None),
                [w for wrapper in self._wrappers for w in wrapper.prunable_weights],
            )
        )
        # A training step traced while weights were held (or not) is traced
        # again when that changes: `fit` reads `train_function` at every step.
        traced = getattr(self.model, "_pruning_held_when_traced", self._holding)
        if traced != self._holding and self.model.train_function is not None:
            self.model.make_train_function(force=True)
        self.model._pruning_held_when_traced = self._holding
        for wrapper in self._wrappers:
            wrapper._pruning_step = self._step
            wrapper._pruned_held_at_zero = self._holding
        # Read again at the first batch: BackupAndRestore restores the
        # wrappers' step in its own on_train_begin, which may run after this.
        self._step_read = False
        self._updated = False
        self._start_counting()

    def _model_step(self):
        return max(0, max(w.pruning_step for w in self._wrappers))

    def _apply_pending(self):
        # A model built without input shapes is built by its first training
        # step; updates due before it are applied right after it.
        updated = self._update(self._pending)
        self._pending = []
        self._clear_moments(updated)

    def _update(self, scheduled):
        """Updates the masks of each `(unit, step)` of `scheduled` whose
        schedule prunes at that step, and returns the wrappers whose masks
        changed. Each schedule is asked once per step: wrappers made by one
        `prune_low_magnitude` share theirs."""
        decisions, due = {}, []
        for unit, step in scheduled:
            key = (id(unit.pruning_schedule), step)
            if key not in decisions:
                decisions[key] = unit.pruning_schedule(step)
            should_prune, sparsity = decisions[key]
            if should_prune:
                due.append((unit, sparsity))
        if not due:
            return []
        sync_trainer_state(self.model)
        updated = [wrapper for unit, _ in due for wrapper in _wrappers_of(unit)]
        _check_pruned_at_zero(updated)
        # Unstructured masks of single layers: one compiled call for all.
        together, alone = [], []
        for unit, sparsity in due:
            unstructured = isinstance(unit, PruneLowMagnitude) and unit._unstructured
            (together if unstructured else alone).append((unit, sparsity))
        _update_unstructured(together)
        for unit, sparsity in alone:
            unit.update_masks(sparsity)
        self._updated = True
        return updated

    def _clear_moments(self, wrappers):
        # Once per step, for every wrapper whose masks changed. An uncompiled
        # model (a custom training loop) has no optimizer.
        if wrappers:
            clear_pruned_moments(getattr(self.model, "optimizer", None), wrappers)

    def on_train_batch_begin(self, batch, logs=None):
        if self._wrappers is None:
            self.on_train_begin()
        self._batch_begun()
        self._updated_before_batch = self._updated
        self._apply_pending()
        if not self._step_read:
            self._step = self._model_step()
            self._step_read = True
            if self._holding:
                # Whatever was written between fit() calls (weights, masks,
                # here after BackupAndRestore), the pruned weights and their
                # first moments start training at 0.
                sync_trainer_state(self.model)
                if not _pruned_at_zero(self._wrappers):
                    for wrapper in self._wrappers:
                        wrapper._write_masked_weights()
                self._clear_moments(self._wrappers)
        self._step += 1
        for wrapper in self._wrappers:
            wrapper._set_step(self._step)
        self._pending.extend((u, self._step) for u in self._units if not u.built)
        updated = self._update([(u, self._step) for u in self._units if u.built])
        # Channel groups span layers: one update for the whole model.
        if self._channel_masks is not None and self._channel_masks.update(self._step):
            updated.extend(self._channel_masks.wrapper_of.values())
            self._updated = True
        self._clear_moments(updated)

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # `batch` is accepted for TFMOT's custom-loop idiom
        # `callback.on_epoch_end(batch=-1)`.
        del epoch, logs, batch
        self._apply_pending()
        if self._untrained_batch():
            # Its step is taken back, and the next batch, which takes its
            # number, sets that step's masks again: on JAX, the trainer has
            # written back the state from before this batch began.
            self._step -= 1
            for wrapper in self._wrappers:
                wrapper._set_step(self._step)
            self._updated = self._updated_before_batch

    def on_train_end(self, logs=None):
        self._apply_pending()
        if self._wrappers is None:
            return
        if self._holding:
            try:
                sync_trainer_state(self.model)
                _check_pruned_at_zero(self._wrappers)
            finally:
                # Outside fit(), training calls mask the weights again.
                self._holding = False
                for wrapper in self._wrappers:
                    wrapper._pruned_held_at_zero = False
        if self._updated:
            return
        dense = [
            w.name
            for w in self._wrappers
            if all(bool(ops.all(ops.equal(m, 1))) for m in w.masks)
            and w.pruning_schedule.sparsity(self._step) > 0
        ]
        if dense:
            warnings.warn(
                f"Training ended at pruning step {self._step} without any mask "
                f"update, so layers {dense} are not pruned. A schedule updates "
                "masks only at `begin_step + k * frequency` (TFMOT's default "
                "frequency is 100): lower `frequency` or `begin_step`, or train "
                "for more steps.",
                stacklevel=2,
            )


class PruningSummaries(keras.callbacks.Callback):
    """Logs each pruned weight's sparsity and threshold to TensorBoard.

    Tags are unique per weight: `<wrapper>/<weight>/sparsity` and
    `<wrapper>/<weight>/threshold`, with the pruning step as x-axis. The state
    is logged every epoch (or every `update_freq` batches) and once more when
    training ends, so the final masks are always recorded. Use it together
    with `UpdatePruningStep`. Needs TensorFlow and TensorBoard
    (`pip install 'keras-pruning[tensorboard]'`).

    Args:
        log_dir: directory for the event files.
        update_freq: `"epoch"`, or a positive number of batches. Defaults to
            `"epoch"`.

    Examples:
        >>> callbacks = [UpdatePruningStep(), PruningSummaries("logs/")]
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise TypeError(
                "`log_dir` must be a non-empty path (str or os.PathLike). "
                f"Received: log_dir={log_dir!r}"
            )
        valid_int = isinstance(update_freq, int) and not isinstance(update_freq, bool)
        if not (update_freq == "epoch" or (valid_int and update_freq > 0)):
            raise ValueError(
                "`update_freq` must be 'epoch' or a positive integer number of "
                f"batches. Received: update_freq={update_freq!r}"
            )
        _require_tensorboard()
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0
        if update_freq != "epoch":
            # Only a batch-level hook that is really used: any override of
            # on_train_batch_end makes Keras fetch the logs after every step.
            self.on_train_batch_end = self._write_every_n_batches

    def _write(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        wrappers = _find_wrappers(self.model, "PruningSummaries")
        with self._writer.as_default():
            for wrapper in wrappers:
                step = max(wrapper.pruning_step, 0)
                for mask, threshold in zip(
                    wrapper.masks, wrapper.thresholds, strict=True
                ):
                    tag = f"{wrapper.name}/{mask.name.removesuffix('_mask')}"
                    kept = ops.convert_to_numpy(ops.mean(ops.cast(mask, "float32")))
                    tf.summary.scalar(f"{tag}/sparsity", 1.0 - float(kept), step=step)
                    tf.summary.scalar(
                        f"{tag}/threshold",
                        float(ops.convert_to_numpy(threshold)),
                        step=step,
                    )
        self._writer.flush()

    def _write_every_n_batches(self, batch, logs=None):
        self._batches += 1
        if self._batches % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write()

    def on_train_end(self, logs=None):
        self._write()
        self._writer.close()
        self._writer = None
