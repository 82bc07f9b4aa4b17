"""Lottery tickets: round_sparsity, prepare, snapshot, update_masks, rewind,
RewindCheckpoint and find_ticket."""

import warnings

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning import lottery

pytestmark = pytest.mark.backends


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8)).astype("float32"), rng.integers(0, 3, n)


def _bn_model():
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )


def _fit(model, callbacks, batches=4, learning_rate=0.1):
    x, y = _data(batches * 4)
    model.compile(
        keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy"
    )
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=callbacks)


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize(
    ("rate", "index", "expected"),
    [(0.2, 0, 0.0), (0.2, 1, 0.2), (0.2, 3, 0.488), (0.5, 2, 0.75), (0.2, 5, 0.67232)],
)
def test_round_sparsity_is_one_minus_kept_fraction_to_the_power_of_rounds(
    rate, index, expected
):
    assert lottery.round_sparsity(rate, index) == expected


@pytest.mark.parametrize(
    ("rate", "index", "error", "message"),
    [
        (0.0, 1, ValueError, r"float in \(0, 1\). Received: rate=0.0"),
        (1.0, 1, ValueError, "Received: rate=1.0"),
        (float("nan"), 1, ValueError, "Received: rate=nan"),
        ("0.2", 1, TypeError, "Received: rate='0.2'"),
        (True, 1, TypeError, "Received: rate=True"),
        (0.2, -1, ValueError, "round_index` must be an integer >= 0"),
        (0.2, 1.5, TypeError, "round_index` must be an integer >= 0"),
    ],
)
def test_round_sparsity_rejects_bad_arguments(rate, index, error, message):
    with pytest.raises(error, match=message):
        lottery.round_sparsity(rate, index)


def test_prepare_wraps_with_masks_that_training_never_changes():
    pruned = lottery.prepare(dense_model())
    wrappers = kp.pruning_wrappers(pruned)
    assert len(wrappers) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no mask update" warning either
        _fit(pruned, [kp.UpdatePruningStep()], batches=6)
    assert all(np.all(m) for w in wrappers for m in _numpy(w.masks))
    assert wrappers[0].pruning_step == 6


def test_prepare_selects_layers():
    pruned = lottery.prepare(dense_model(), layers=lambda layer: layer.units == 16)
    assert [w.layer.units for w in kp.pruning_wrappers(pruned)] == [16]


def test_update_masks_prunes_each_tensor_and_never_revives_a_weight():
    pruned = lottery.prepare(dense_model())
    _fit(pruned, [kp.UpdatePruningStep()])
    lottery.update_masks(pruned, 0.5)
    first = [_numpy(w.masks)[0] for w in kp.pruning_wrappers(pruned)]
    assert [m.mean() for m in first] == [0.5, 0.5]  # 8x16 and 16x3 kernels
    _fit(pruned, [kp.UpdatePruningStep()])
    lottery.update_masks(pruned, 0.75)
    for wrapper, old in zip(kp.pruning_wrappers(pruned), first, strict=True):
        (mask,), (kernel,) = _numpy(wrapper.masks), _numpy(wrapper.prunable_weights)
        assert mask.mean() == 0.25
        assert not np.any(mask & ~old)  # kept now => kept before
        assert np.all(kernel[~mask] == 0)


def test_functions_need_a_pruned_model():
    for function, args in (
        (lottery.update_masks, (0.5,)),
        (lottery.rewind, ([],)),
    ):
        with pytest.raises(ValueError, match="has none: wrap it first with"):
            function(dense_model(), *args)


def test_snapshot_of_a_plain_model_matches_its_pruned_version():
    model = _bn_model()
    plain = lottery.snapshot(model)
    pruned = lottery.prepare(model)
    weights = lottery.snapshot(pruned)
    assert len(plain) == len(weights) == 8  # no masks or thresholds
    for a, b in zip(plain, weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rewind_restores_weights_and_statistics_and_keeps_pruned_weights_zero():
    pruned = lottery.prepare(_bn_model())
    saved = lottery.snapshot(pruned)
    _fit(pruned, [kp.UpdatePruningStep()])
    lottery.update_masks(pruned, 0.5)
    masks = {id(w): _numpy(w.masks)[0] for w in kp.pruning_wrappers(pruned)}
    lottery.rewind(pruned, saved)
    by_path = dict(
        zip((v.path for v in lottery._rewindable(pruned)), saved, strict=True)
    )
    for wrapper in kp.pruning_wrappers(pruned):
        (mask,), (kernel,) = _numpy(wrapper.masks), _numpy(wrapper.prunable_weights)
        np.testing.assert_array_equal(mask, masks[id(wrapper)])  # masks kept
        expected = by_path[wrapper.prunable_weights[0].path]
        np.testing.assert_array_equal(kernel[mask], expected[mask])
        assert np.all(kernel[~mask] == 0)
    bn = pruned.layers[1]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_mean), by_path[bn.moving_mean.path]
    )


def test_rewind_to_a_fresh_plain_model_is_the_random_reinit_control():
    pruned = lottery.prepare(dense_model())
    lottery.update_masks(pruned, 0.5)
    keras.utils.set_random_seed(99)
    fresh = lottery.snapshot(dense_model())
    lottery.rewind(pruned, fresh)
    wrapper = kp.pruning_wrappers(pruned)[0]
    (mask,), (kernel,) = _numpy(wrapper.masks), _numpy(wrapper.prunable_weights)
    np.testing.assert_array_equal(kernel[mask], fresh[0][mask])


def test_rewind_rejects_weights_of_another_architecture():
    pruned = lottery.prepare(dense_model())
    with pytest.raises(ValueError, match="one array per weight .*: 4. Received: 2"):
        lottery.rewind(pruned, lottery.snapshot(dense_model())[:2])
    wider = lottery.snapshot(dense_model(hidden=32))
    with pytest.raises(
        ValueError,
        match=r"variable '[\w/]+kernel' has shape \(8, 16\). Received: an array "
        r"of shape \(8, 32\)",
    ):
        lottery.rewind(pruned, wider)
    nested_lists = [w.tolist() for w in lottery.snapshot(dense_model(hidden=32))]
    with pytest.raises(ValueError, match=r"Received: an array of shape \(8, 32\)"):
        lottery.rewind(pruned, nested_lists)


class _EveryBatch(keras.callbacks.Callback):
    """Records a snapshot before every training batch, and at the end."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(lottery.snapshot(self.model))

    def on_train_end(self, logs=None):
        self.seen.append(lottery.snapshot(self.model))


@pytest.mark.parametrize("step", [0, 3, 5])
def test_rewind_checkpoint_keeps_the_weights_after_step_batches(step):
    pruned = lottery.prepare(dense_model())
    checkpoint, every = lottery.RewindCheckpoint(step), _EveryBatch()
    _fit(pruned, [kp.UpdatePruningStep(), checkpoint, every], batches=5)
    assert checkpoint.batches_seen == 5
    for a, b in zip(checkpoint.weights, every.seen[step], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(every.seen[0][0], every.seen[5][0])  # training moved


def test_rewind_checkpoint_counts_batches_across_fits():
    pruned = lottery.prepare(dense_model())
    checkpoint = lottery.RewindCheckpoint(step=3)
    _fit(pruned, [kp.UpdatePruningStep(), checkpoint], batches=2)
    assert checkpoint.weights is None
    every = _EveryBatch()
    _fit(pruned, [kp.UpdatePruningStep(), checkpoint, every], batches=2)
    for a, b in zip(checkpoint.weights, every.seen[1], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="`step` must be an integer >= 0"):
        lottery.RewindCheckpoint(step=-1)


def test_rewind_checkpoint_skips_a_batch_begun_but_never_trained():
    # On data of unknown length, Keras begins one batch more than it trains
    # (on JAX and TensorFlow) when the data runs out.
    x, y = _data(16)
    pruned = lottery.prepare(dense_model())
    pruned.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    checkpoint = lottery.RewindCheckpoint(step=6)

    class AfterEachBatch(keras.callbacks.Callback):
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(lottery.snapshot(self.model))

    def batches():
        for start in range(0, 16, 4):
            yield x[start : start + 4], y[start : start + 4]

    for _ in range(2):
        callbacks = [kp.UpdatePruningStep(), checkpoint, AfterEachBatch()]
        pruned.fit(batches(), verbose=0, callbacks=callbacks)
    assert checkpoint.batches_seen == len(AfterEachBatch.seen) == 8
    for a, b in zip(checkpoint.weights, AfterEachBatch.seen[5], strict=True):
        np.testing.assert_array_equal(a, b)  # after the 6th batch


def test_find_ticket_prunes_rewinds_and_retrains_each_round():
    starts, masks = [], []

    def train(model, callbacks):
        starts.append(lottery.snapshot(model))
        _fit(model, callbacks, batches=4)

    def evaluate(model):
        masks.append([_numpy(w.masks)[0] for w in kp.pruning_wrappers(model)])
        return {"rounds_evaluated": len(masks)}

    ticket = lottery.find_ticket(
        dense_model(), train, rounds=3, rate=0.5, rewind_step=2, evaluate=evaluate
    )
    assert [r.round for r in ticket.rounds] == [0, 1, 2, 3]
    assert [r.sparsity for r in ticket.rounds] == [
        lottery.round_sparsity(0.5, r) for r in range(4)
    ]  # 0, 0.5, 0.75, 0.875: exact for these kernel sizes
    assert [r.metrics for r in ticket.rounds] == [
        {"rounds_evaluated": i} for i in range(1, 5)
    ]
    for index in range(1, 4):
        # Each round starts from mask * w_2, with the masks of its evaluation.
        for weight, saved, mask in zip(
            starts[index][::2], ticket.rewind_weights[::2], masks[index], strict=True
        ):
            np.testing.assert_array_equal(weight, np.where(mask, saved, 0))
        # Masks only shrink.
        for new, old in zip(masks[index], masks[index - 1], strict=True):
            assert not np.any(new & ~old)
    final = kp.pruning_wrappers(ticket.model)
    for wrapper, mask in zip(final, masks[-1], strict=True):
        assert np.all(_numpy(wrapper.prunable_weights)[0][~mask] == 0)


def test_find_ticket_with_zero_learning_rate_ends_at_the_rewound_weights():
    def train(model, callbacks):
        _fit(model, callbacks, batches=3, learning_rate=0.0)

    ticket = lottery.find_ticket(dense_model(), train, rounds=2, rate=0.2)
    assert ticket.rounds[-1].metrics is None
    for wrapper, saved in zip(
        kp.pruning_wrappers(ticket.model), ticket.rewind_weights[::2], strict=True
    ):
        (mask,), (kernel,) = _numpy(wrapper.masks), _numpy(wrapper.prunable_weights)
        np.testing.assert_array_equal(kernel, np.where(mask, saved, 0))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": "model"}, TypeError, "`model` must be a keras.Model"),
        ({"train": None}, TypeError, r"`train` must be a function `train\(model"),
        ({"evaluate": 3}, TypeError, "`evaluate` must be a function"),
        ({"rounds": 0}, ValueError, "`rounds` must be an integer >= 1"),
        ({"rate": 1.5}, ValueError, "Received: rate=1.5"),
        ({"rewind_step": 2.0}, TypeError, "`rewind_step` must be an integer"),
        (
            {"rewind_step": 9},
            ValueError,
            "at most the number of batches of round 0, which trained 4. "
            "Received: rewind_step=9",
        ),
    ],
)
def test_find_ticket_rejects_bad_arguments(kwargs, error, message):
    arguments = {
        "model": dense_model(),
        "train": lambda model, callbacks: _fit(model, callbacks),
        "rounds": 1,
        "rate": 0.2,
        **kwargs,
    }
    with pytest.raises(error, match=message):
        lottery.find_ticket(**arguments)


def test_find_ticket_needs_a_layer_to_prune():
    with pytest.raises(ValueError, match="selects no prunable layer.*layers=<class"):
        lottery.find_ticket(
            dense_model(), lambda m, c: None, 1, 0.2, layers=keras.layers.Conv2D
        )
    with pytest.raises(ValueError, match=r"does not have: \['x'\]"):
        lottery.find_ticket(dense_model(), lambda m, c: None, 1, 0.2, layers="x")


def test_find_ticket_rejects_a_pruned_model():
    with pytest.raises(ValueError, match="already pruned"):
        lottery.find_ticket(
            kp.prune_low_magnitude(dense_model()), lambda m, c: None, 1, 0.2
        )
