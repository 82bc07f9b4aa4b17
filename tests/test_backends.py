"""Training on every Keras backend: `fit` eager and compiled, and custom loops
written each backend's way (`keras_pruning._trainer` and the callback)."""

import functools

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning._trainer import sync_trainer_state

pytestmark = pytest.mark.backends

SCHEDULE = kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=3)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LEARNING_RATE = 0.1
# `jit_compile=True` is XLA on TensorFlow and JAX, torch.compile on PyTorch.
MODES = {"eager": {"run_eagerly": True}, "compiled": {"jit_compile": True}}


def _data(n=40):
    rng = np.random.default_rng(0)
    return rng.random((n, 8)).astype("float32"), rng.integers(0, 3, n)


def _pruned():
    keras.utils.set_random_seed(7)
    return kp.prune_low_magnitude(dense_model(), SCHEDULE)


def _np(x):
    return keras.ops.convert_to_numpy(x)


class _RecordMasks(keras.callbacks.Callback):
    """After each batch: each wrapper's sparsity and the largest pruned |w|."""

    def __init__(self):
        super().__init__()
        self.sparsity, self.largest_pruned = {}, {}

    def on_train_batch_end(self, batch, logs=None):
        sync_trainer_state(self.model)
        for wrapper in kp.pruning_wrappers(self.model):
            mask = _np(wrapper.masks[0])
            kernel = _np(wrapper.layer.kernel)
            key = (wrapper.name, wrapper.pruning_step)
            self.sparsity[key] = 1.0 - mask.mean()
            self.largest_pruned[key] = float(np.abs(kernel[~mask]).max(initial=0.0))


@functools.cache
def _fit(mode):
    """The weights, the pruning steps and the recorded masks after `fit`."""
    x, y = _data()
    model = _pruned()
    model.compile(keras.optimizers.SGD(LEARNING_RATE), LOSS, **MODES[mode])
    record = _RecordMasks()
    model.fit(
        x,
        y,
        batch_size=4,
        shuffle=False,
        verbose=0,
        callbacks=[kp.UpdatePruningStep(), record],
    )
    steps = [w.pruning_step for w in kp.pruning_wrappers(model)]
    return model.get_weights(), steps, record


@pytest.mark.parametrize("mode", MODES)
def test_fit_masks_reach_the_training_step(mode):
    _, steps, record = _fit(mode)
    for (_, step), sparsity in record.sparsity.items():
        updated_at = max(s for s in (0, 3, 6) if s <= step)
        assert sparsity == pytest.approx(SCHEDULE.sparsity(updated_at), abs=0.02)
    # The steps trained with the masks the callback wrote before them: the
    # gradient of a pruned weight is zero, so it stays exactly zero.
    assert set(record.largest_pruned.values()) == {0.0}
    assert steps == [10, 10]


def _assert_same_weights(expected, actual):
    for a, b in zip(expected, actual, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_fit_trains_like_eager_fit():
    _assert_same_weights(_fit("eager")[0], _fit("compiled")[0])


def test_sync_trainer_state_outside_fit_changes_nothing():
    model = _pruned()
    before = [w.copy() for w in model.get_weights()]
    sync_trainer_state(model)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.jax
def test_jax_stateless_loop_trains_like_fit():
    import jax

    x, y = _data()
    model = _pruned()
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()

    def loss_of(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return LOSS(y, logits), non_trainable

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_state = state
        (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
            trainable, non_trainable, x, y
        )
        trainable, optimizer_state = optimizer.stateless_apply(
            optimizer_state, grads, trainable
        )
        return trainable, non_trainable, optimizer_state

    owners = (model.trainable_variables, model.non_trainable_variables)
    owners += (optimizer.variables,)
    for start in range(0, len(x), 4):
        # The callback reads and writes the variables: keep them current.
        callback.on_train_batch_begin(start // 4)
        state = tuple([v.value for v in variables] for variables in owners)
        state = train_step(state, x[start : start + 4], y[start : start + 4])
        for variables, values in zip(owners, state, strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
    callback.on_train_end()

    _assert_same_weights(_fit("eager")[0], model.get_weights())
    assert kp.sparsity_report(model)[0].sparsity == pytest.approx(0.75, abs=0.02)


@pytest.mark.torch
def test_torch_loop_trains_like_fit():
    import torch

    x, y = _data()
    model = _pruned()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    for start in range(0, len(x), 4):
        callback.on_train_batch_begin(start // 4)
        logits = model(torch.from_numpy(x[start : start + 4]), training=True)
        loss = LOSS(torch.from_numpy(y[start : start + 4]), logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    callback.on_train_end()

    _assert_same_weights(_fit("eager")[0], model.get_weights())
    assert kp.sparsity_report(model)[0].sparsity == pytest.approx(0.75, abs=0.02)


@pytest.mark.jax
@pytest.mark.torch
def test_export_on_another_backend_says_to_load_under_tensorflow():
    from keras_pruning import export

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow.*Received"):
        export.to_tflite(_pruned())
