"""Global pruning during training: `prune_low_magnitude(..., global_pruning=True)`
with `"magnitude"` and `"erk"` allocations and per-layer bounds
(`keras_pruning._global_masks`)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_pruning as kp
from keras_pruning.allocation import erk_sparsities
from keras_pruning.masks import global_magnitude_masks, num_kept
from tests.conftest import run_in_fresh_process

pytestmark = pytest.mark.backends

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp():
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu", name="wide"),
            keras.layers.Dense(16, activation="relu", name="middle"),
            keras.layers.Dense(3, name="head"),
        ]
    )


def _train(model, rng, learning_rate=0.0, epochs=1):
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, 64)
    model.compile(keras.optimizers.Adam(learning_rate), LOSS)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        callbacks=[kp.UpdatePruningStep()],
    )
    return model


def _kernels(model):
    return [
        ops.convert_to_numpy(w.prunable_weights[0]) for w in kp.pruning_wrappers(model)
    ]


def _masks(model):
    return [ops.convert_to_numpy(w.masks[0]) for w in kp.pruning_wrappers(model)]


def test_global_magnitude_masks_equal_one_global_ranking(rng):
    # With lr = 0 the weights never move: the trained masks must be the
    # one-shot global ranking of the initial kernels.
    dense = _mlp()
    initial = [layer.kernel.numpy() for layer in dense.layers]
    model = kp.prune_low_magnitude(
        dense, kp.ConstantSparsity(0.7, 0, frequency=1), global_pruning=True
    )
    _train(model, rng)
    expected, _ = global_magnitude_masks(initial, 0.7)
    for mask, want in zip(_masks(model), expected, strict=True):
        np.testing.assert_array_equal(mask, ops.convert_to_numpy(want))
    sizes = [m.size for m in _masks(model)]
    assert sum(m.sum() for m in _masks(model)) == num_kept(sum(sizes), 0.7)
    # One threshold: layers end at different sparsities.
    assert len({round(1 - m.mean(), 3) for m in _masks(model)}) == 3
    thresholds = [float(w.thresholds[0]) for w in kp.pruning_wrappers(model)]
    assert thresholds[0] == thresholds[1] == thresholds[2] > 0


def test_global_pruning_follows_a_polynomial_schedule_while_training(rng):
    schedule = kp.PolynomialDecay(0.0, 0.8, 0, 8, frequency=2)
    model = kp.prune_low_magnitude(_mlp(), schedule, global_pruning=True)
    _train(model, rng, learning_rate=1e-2, epochs=3)
    masks = _masks(model)
    total = sum(m.size for m in masks)
    assert sum(m.sum() for m in masks) == num_kept(total, 0.8)
    wrappers = kp.pruning_wrappers(model)
    for wrapper, mask in zip(wrappers, masks, strict=True):
        assert np.all(wrapper.masked_weights()[0][~mask] == 0)


def test_erk_allocation_gives_each_layer_its_erk_target(rng):
    model = kp.prune_low_magnitude(
        _mlp(),
        kp.ConstantSparsity(0.8, 0, frequency=1),
        global_pruning=True,
        allocation="erk",
    )
    _train(model, rng, learning_rate=1e-2)
    masks = _masks(model)
    targets = erk_sparsities([m.shape for m in masks], 0.8)
    assert [int(m.sum()) for m in masks] == [
        num_kept(m.size, t) for m, t in zip(masks, targets, strict=True)
    ]
    # The small head stays denser than the wide first layer.
    assert masks[2].mean() > masks[0].mean()


def test_bounds_by_name_and_class_are_respected(rng):
    model = kp.prune_low_magnitude(
        _mlp(),
        kp.ConstantSparsity(0.8, 0, frequency=1),
        global_pruning=True,
        sparsity_bounds={"head": (0.0, 0.25), keras.layers.Dense: (0.5, 0.9)},
    )
    bounds = [w.sparsity_bounds for w in kp.pruning_wrappers(model)]
    assert bounds == [(0.5, 0.9), (0.5, 0.9), (0.0, 0.25)]
    _train(model, rng, learning_rate=1e-2)
    sparsities = [1 - m.mean() for m in _masks(model)]
    assert sparsities[2] <= 0.25
    assert all(0.5 <= s <= 0.9 + 1e-9 for s in sparsities[:2])


def test_global_pruning_with_blocks_ranks_blocks_together(rng):
    model = kp.prune_low_magnitude(
        _mlp(),
        kp.ConstantSparsity(0.5, 0, frequency=1),
        global_pruning=True,
        block_size=(4, 1),
        layers=["wide", "middle"],
    )
    _train(model, rng)
    masks = _masks(model)
    for mask in masks:  # constant over each 4 x 1 block
        blocks = mask.reshape(mask.shape[0] // 4, 4, mask.shape[1])
        assert np.all(blocks == blocks[:, :1, :])
    assert sum(m.sum() for m in masks) / 4 == num_kept((8 * 32 + 32 * 16) // 4, 0.5)


def test_taylor_criterion_ranks_globally(rng):
    model = kp.prune_low_magnitude(
        _mlp(),
        kp.ConstantSparsity(0.6, 0, frequency=1000),
        global_pruning=True,
        criterion="taylor",
    )
    with pytest.warns(UserWarning, match="without any mask update"):
        _train(model, rng)
    wrappers = kp.pruning_wrappers(model)
    scores = [
        np.abs(ops.convert_to_numpy(w.prunable_weights[0]) * w._gradients[0].numpy())
        for w in wrappers
    ]
    expected, _ = global_magnitude_masks(scores, 0.6)
    from keras_pruning._global_masks import GlobalMasks

    GlobalMasks(wrappers).update_masks(0.6)
    for wrapper, want in zip(wrappers, expected, strict=True):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(wrapper.masks[0]), ops.convert_to_numpy(want)
        )


def test_global_settings_survive_save_load_and_training_goes_on(tmp_path, rng):
    model = kp.prune_low_magnitude(
        _mlp(),
        kp.PolynomialDecay(0.0, 0.9, 0, 20, frequency=2),
        global_pruning=True,
        allocation="erk",
        sparsity_bounds={"head": (0.0, 0.5)},
        criterion="taylor",
    )
    _train(model, rng, learning_rate=1e-2)
    path = tmp_path / "global.keras"
    model.save(path)
    result = run_in_fresh_process(
        f"""
        import json, keras, numpy as np, keras_pruning as kp
        model = keras.models.load_model({str(path)!r})
        wrappers = kp.pruning_wrappers(model)
        settings = [
            [w.global_pruning, w.allocation, w.sparsity_bounds, w.criterion]
            for w in wrappers
        ]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(160, 8)).astype("float32")
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        model.fit(x, rng.integers(0, 3, 160), batch_size=16, verbose=0,
                  callbacks=[kp.UpdatePruningStep()])
        masks = [np.asarray(w.masks[0]) for w in wrappers]
        print(json.dumps({{
            "settings": settings,
            "step": wrappers[0].pruning_step,
            "kept": [int(m.sum()) for m in masks],
            "sizes": [m.size for m in masks],
        }}))
        """
    )
    assert result["settings"] == [
        [True, "erk", None, "taylor"],
        [True, "erk", None, "taylor"],
        [True, "erk", [0.0, 0.5], "taylor"],
    ]
    assert result["step"] == 14
    _, sparsity = kp.PolynomialDecay(0.0, 0.9, 0, 20, frequency=2)(14)
    targets = erk_sparsities(
        [m.shape for m in _masks(model)], sparsity, [(0.0, 1.0)] * 2 + [(0.0, 0.5)]
    )
    caps = [1.0, 1.0, 0.5]
    assert result["kept"] == [
        max(num_kept(n, t), math.ceil(n * (1 - cap)))
        for n, t, cap in zip(result["sizes"], targets, caps, strict=True)
    ]


def test_global_wrappers_must_share_a_schedule(rng):
    first = kp.PruneLowMagnitude(
        keras.layers.Dense(4), kp.ConstantSparsity(0.5, 0), global_pruning=True
    )
    second = kp.PruneLowMagnitude(
        keras.layers.Dense(3), kp.ConstantSparsity(0.6, 0), global_pruning=True
    )
    model = keras.Sequential([keras.Input((8,)), first, second])
    with pytest.raises(ValueError, match=r"must share a schedule"):
        _train(model, rng)


def test_a_global_wrapper_is_not_updated_on_its_own():
    layer = kp.PruneLowMagnitude(keras.layers.Dense(4), global_pruning=True)
    layer.build((None, 3))
    with pytest.raises(ValueError, match=r"global_pruning=True: its masks are set"):
        layer.update_masks(0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"global_pruning": "yes"}, TypeError, r"`global_pruning` must be True or"),
        ({"sparsity_bounds": (0.1, 0.5)}, ValueError, r"pass `global_pruning=True`"),
        ({"allocation": "erk"}, ValueError, r"pass `global_pruning=True`"),
        (
            {"global_pruning": True, "allocation": "uniform"},
            ValueError,
            r"`allocation` must be one of",
        ),
        (
            {"global_pruning": True, "sparsity_bounds": (0.5, 0.2)},
            ValueError,
            r"0 <= floor <= cap < 1",
        ),
        (
            {"global_pruning": True, "sparsity_bounds": {"head": 0.5}},
            TypeError,
            r"`sparsity_bounds` must be a pair",
        ),
        (
            {"global_pruning": True, "sparsity_bounds": {3: (0.1, 0.2)}},
            TypeError,
            r"`sparsity_bounds` must hold layer names",
        ),
        (
            {"global_pruning": True, "sparsity_m_by_n": (2, 4)},
            ValueError,
            r"cannot be combined with `global_pruning=True`",
        ),
        (
            {"global_pruning": True, "granularity": "channel"},
            ValueError,
            r"takes no `criterion` and no `global_pruning`",
        ),
    ],
)
def test_bad_global_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        kp.prune_low_magnitude(_mlp(), **kwargs)


def test_a_dict_schedule_cannot_be_global():
    with pytest.raises(ValueError, match=r"pass one PruningSchedule"):
        kp.prune_low_magnitude(
            _mlp(), {"head": kp.ConstantSparsity(0.5, 0)}, global_pruning=True
        )


def test_one_shot_global_pruning_takes_erk_and_bounds():
    dense = _mlp()
    sparse = kp.prune_to_sparsity(dense, 0.8, global_pruning=True, allocation="erk")
    kernels = [layer.kernel.numpy() for layer in sparse.layers]
    targets = erk_sparsities([k.shape for k in kernels], 0.8)
    assert [int((k != 0).sum()) for k in kernels] == [
        num_kept(k.size, t) for k, t in zip(kernels, targets, strict=True)
    ]
    bounded = kp.prune_to_sparsity(
        dense, 0.8, global_pruning=True, sparsity_bounds={"head": (0.0, 0.1)}
    )
    assert (bounded.layers[2].kernel.numpy() != 0).mean() >= 0.9
    with pytest.raises(ValueError, match=r"pass `global_pruning=True`"):
        kp.prune_to_sparsity(dense, 0.8, allocation="erk")
