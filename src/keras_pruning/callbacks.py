"""Training callbacks: `UpdatePruningStep` drives the masks, `PruningSummaries`
logs them to TensorBoard."""

import importlib.util
import os
import warnings

import keras
from keras import ops

from keras_pruning._global_masks import GlobalMasks
from keras_pruning._optimizer_slots import clear_pruned_moments
from keras_pruning._trainer import sync_trainer_state
from keras_pruning.prune import pruning_wrappers

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


def _wrappers_of(unit):
    """The wrappers whose masks one mask update of `unit` sets."""
    return unit.wrappers if isinstance(unit, GlobalMasks) else [unit]


def _require_tensorboard():
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "PruningSummaries writes TensorBoard logs and needs the `tensorboard` "
            "package: pip install 'keras-pruning[tensorboard]'."
        )


class UpdatePruningStep(keras.callbacks.Callback):
    """Steps the model's pruning schedule once per training batch.

    One step counter serves the whole model: a shared layer, or a layer called
    twice per batch, advances once. The first training batch is step 1; steps
    carry over across `fit()` calls and across save and load (the step is
    read at the first batch, after `BackupAndRestore` restores it, whatever
    the order of the callbacks). Before each batch
    whose step a wrapper's schedule selects, that wrapper's masks are
    recomputed from the current weights (between steps, so on every backend).
    A model that is only built by its first training step (a Sequential
    model without an `Input`) gets the updates due at that step right after it.

    In a custom training loop, call `set_model(model)` and `on_train_begin()`
    once, then `on_train_batch_begin(batch)` before every step.

    Examples:
        >>> model.fit(x, y, callbacks=[keras_pruning.UpdatePruningStep()])
    """

    def __init__(self):
        super().__init__()
        self._wrappers = None
        self._channel_masks = None
        self._units = []
        self._step = None
        self._step_read = False
        self._updated = False
        self._pending = []

    def set_model(self, model):
        super().set_model(model)
        self._wrappers = None

    def on_train_begin(self, logs=None):
        if self.model is None:
            raise ValueError(
                "UpdatePruningStep has no model: call `set_model(model)` before "
                "`on_train_begin()` in a custom training loop."
            )
        self._wrappers = _find_wrappers(self.model, "UpdatePruningStep")
        _check_single_use(self.model, self._wrappers)
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
        for wrapper in self._wrappers:
            wrapper._pruning_step = self._step
        # Read again at the first batch: BackupAndRestore restores the
        # wrappers' step in its own on_train_begin, which may run after this.
        self._step_read = False
        self._updated = False

    def _model_step(self):
        return max(0, max(w.pruning_step for w in self._wrappers))

    def _apply_pending(self):
        # A model built without input shapes is built by its first training
        # step; updates due before it are applied right after it.
        updated = [
            wrapper
            for unit, step in self._pending
            if self._update(unit, step, {})
            for wrapper in _wrappers_of(unit)
        ]
        self._pending = []
        self._clear_moments(updated)

    def _update(self, unit, step, decisions):
        """Updates the masks of `unit` if its schedule prunes at `step`, and
        returns whether it did. `decisions` caches each schedule's
        `(should_prune, sparsity)` at `step`: wrappers made by one
        `prune_low_magnitude` share theirs."""
        schedule = unit.pruning_schedule
        if id(schedule) not in decisions:
            decisions[id(schedule)] = schedule(step)
        should_prune, sparsity = decisions[id(schedule)]
        if not should_prune:
            return False
        sync_trainer_state(self.model)
        unit.update_masks(sparsity)
        self._updated = True
        return True

    def _clear_moments(self, wrappers):
        # Once per step, for every wrapper whose masks changed. An uncompiled
        # model (a custom training loop) has no optimizer.
        if wrappers:
            clear_pruned_moments(getattr(self.model, "optimizer", None), wrappers)

    def on_train_batch_begin(self, batch, logs=None):
        if self._wrappers is None:
            self.on_train_begin()
        self._apply_pending()
        if not self._step_read:
            self._step = self._model_step()
            self._step_read = True
        self._step += 1
        for wrapper in self._wrappers:
            wrapper._set_step(self._step)
        decisions, updated = {}, []
        for unit in self._units:
            if not unit.built:
                self._pending.append((unit, self._step))
            elif self._update(unit, self._step, decisions):
                updated.extend(_wrappers_of(unit))
        # Channel groups span layers: one update for the whole model.
        if self._channel_masks is not None and self._channel_masks.update(self._step):
            updated.extend(self._channel_masks.wrapper_of.values())
            self._updated = True
        self._clear_moments(updated)

    # No on_train_batch_end: overriding it makes Keras turn off asynchronous
    # callback dispatch and fetch the logs after every step.

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # `batch` is accepted for TFMOT's custom-loop idiom
        # `callback.on_epoch_end(batch=-1)`.
        del epoch, logs, batch
        self._apply_pending()

    def on_train_end(self, logs=None):
        self._apply_pending()
        if self._wrappers is None or self._updated:
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
