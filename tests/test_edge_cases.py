"""Numerical edge cases of pruning during training: sparsity 0 and 0.999,
all-zero and constant weights, NaN and infinity, and a 1M x 64 Embedding."""

import keras
import numpy as np
import pytest
from conftest import dense_model, run_in_fresh_process

import keras_pruning as kp


def _data(n=32, dim=8):
    rng = np.random.default_rng(0)
    return rng.random((n, dim)).astype("float32"), rng.integers(0, 3, n)


def _fit(model, x, y, callbacks=()):
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=list(callbacks))


def _wrapped(layer, input_shape, **kwargs):
    wrapper = kp.PruneLowMagnitude(layer, **kwargs)
    wrapper.build(input_shape)
    return wrapper


def test_sparsity_zero_trains_exactly_like_the_unpruned_model():
    x, y = _data()
    keras.utils.set_random_seed(5)
    plain = dense_model()
    _fit(plain, x, y)

    keras.utils.set_random_seed(5)
    pruned = kp.prune_low_magnitude(
        dense_model(), kp.ConstantSparsity(0.0, 0, frequency=1)
    )
    _fit(pruned, x, y, [kp.UpdatePruningStep()])

    stripped = kp.strip_pruning(pruned)
    for a, b in zip(plain.get_weights(), stripped.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(keras.ops.convert_to_numpy(m)) for m in _all_masks(pruned))


def _all_masks(model):
    return [m for w in kp.pruning_wrappers(model) for m in w.masks]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"block_size": (4, 4)}, {"block_size": (1, 2), "block_pooling_type": "max"}],
)
def test_sparsity_0999_on_tiny_layers_keeps_one_weight_or_block(kwargs):
    x, y = _data(dim=2)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(3)]
    )
    pruned = kp.prune_low_magnitude(
        model, kp.ConstantSparsity(0.999, 0, frequency=1), **kwargs
    )
    _fit(pruned, x, y, [kp.UpdatePruningStep()])
    r, c = kwargs.get("block_size", (1, 1))
    for mask in _all_masks(pruned):
        mask = keras.ops.convert_to_numpy(mask)
        kept = int(mask.sum())
        assert 1 <= kept <= r * c
        # One block: the kept weights all lie in one r x c tile.
        rows, cols = np.nonzero(mask)
        assert len(set(rows // r)) == 1 and len(set(cols // c)) == 1
    assert np.all(np.isfinite(pruned.predict(x, verbose=0)))


@pytest.mark.parametrize("value", [0.0, 0.3, -2.0])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_all_equal_weights_prune_exactly_the_target_count_in_index_order(
    value, sparsity
):
    wrapper = _wrapped(keras.layers.Dense(6, use_bias=False), (None, 4))
    wrapper.layer.kernel.assign(np.full((4, 6), value, "float32"))
    wrapper.update_masks(sparsity)
    mask = keras.ops.convert_to_numpy(wrapper.masks[0])
    kept = kp.masks.num_kept(24, sparsity)
    # Ties keep the first weights in flat-index order.
    np.testing.assert_array_equal(mask.ravel(), np.arange(24) < kept)
    threshold = keras.ops.convert_to_numpy(wrapper.thresholds[0])
    assert threshold == np.float32(abs(value))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wrapper.layer.kernel),
        np.where(mask, np.float32(value), np.float32(0)),
    )


@pytest.mark.parametrize(
    "kwargs", [{"block_size": (2, 2)}, {"sparsity_m_by_n": (2, 4)}]
)
def test_all_zero_weights_give_exact_block_and_m_by_n_masks(kwargs):
    wrapper = _wrapped(keras.layers.Dense(4, use_bias=False), (None, 8), **kwargs)
    wrapper.layer.kernel.assign(np.zeros((8, 4), "float32"))
    wrapper.update_masks(0.5)
    mask = keras.ops.convert_to_numpy(wrapper.masks[0])
    assert int(mask.sum()) == 16
    if "sparsity_m_by_n" in kwargs:  # two of every four inputs, the first two
        np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 1, 1, 0, 0])
    assert float(keras.ops.convert_to_numpy(wrapper.thresholds[0])) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_fails_fit_at_the_next_mask_update(bad):
    x, y = _data()
    schedule = kp.ConstantSparsity(0.5, begin_step=3, frequency=2)
    pruned = kp.prune_low_magnitude(dense_model(), schedule)
    first = kp.pruning_wrappers(pruned)[0]
    kernel = keras.ops.convert_to_numpy(first.layer.kernel)
    kernel[0, 0] = bad
    first.layer.kernel.assign(kernel)
    message = (
        f"Weight '{first.layer.kernel.path}' of layer '{first.layer.name}' "
        "holds NaN or infinite values at pruning step 3"
    )
    # Steps 1 and 2 train (and spread NaN); step 3 is the first mask update.
    with pytest.raises(ValueError, match=message):
        _fit(pruned, x, y, [kp.UpdatePruningStep()])
    assert all(np.all(keras.ops.convert_to_numpy(m)) for m in _all_masks(pruned))


def test_non_finite_weight_in_a_second_prunable_weight_leaves_all_masks_alone():
    wrapper = _wrapped(keras.layers.SimpleRNN(4), (None, 3, 2))
    assert len(wrapper.prunable_weights) == 2
    recurrent = wrapper.prunable_weights[1]
    values = keras.ops.convert_to_numpy(recurrent)
    values[1, 2] = np.nan
    recurrent.assign(values)
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        wrapper.update_masks(0.5)
    assert all(np.all(keras.ops.convert_to_numpy(m)) for m in wrapper.masks)


def test_non_finite_value_at_a_masked_position_is_ignored_then_reset():
    wrapper = _wrapped(keras.layers.Dense(4), (None, 4))
    wrapper.update_masks(0.5)
    kernel = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    masked = np.argwhere(~keras.ops.convert_to_numpy(wrapper.masks[0]))[0]
    kernel[tuple(masked)] = np.nan
    wrapper.layer.kernel.assign(kernel)
    wrapper.update_masks(0.75)  # the masked NaN scores 0: no error
    mask = keras.ops.convert_to_numpy(wrapper.masks[0])
    assert int(mask.sum()) == 4 and not mask[tuple(masked)]
    assert np.all(np.isfinite(wrapper.masked_weights()[0]))
    # The update writes 0 there, so the training step's product is finite.
    assert keras.ops.convert_to_numpy(wrapper.layer.kernel)[tuple(masked)] == 0
    outputs = wrapper(np.ones((2, 4), "float32"), training=False)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))


def _two_convolutions():
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(8, 3),
            keras.layers.ReLU(),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def test_non_finite_weight_fails_a_channel_mask_update():
    x = np.random.default_rng(0).random((8, 6, 6, 3)).astype("float32")
    model = _two_convolutions()
    pruned = kp.prune_low_magnitude(
        model, kp.ConstantSparsity(0.5, 0, frequency=1), granularity="channel"
    )
    kernel = pruned.layers[0].layer.kernel
    values = keras.ops.convert_to_numpy(kernel)
    values[0, 0, 0, 0] = np.inf
    kernel.assign(values)
    pruned.compile("sgd", "mse")
    with pytest.raises(ValueError, match="holds NaN or infinite values at pruning"):
        pruned.fit(x, np.zeros((8, 4)), verbose=0, callbacks=[kp.UpdatePruningStep()])


def test_non_finite_value_at_a_masked_channel_is_ignored_then_reset():
    x = np.random.default_rng(0).random((8, 6, 6, 3)).astype("float32")
    model = _two_convolutions()
    schedule = kp.PolynomialDecay(0.25, 0.5, begin_step=0, end_step=2, frequency=1)
    pruned = kp.prune_low_magnitude(model, schedule, granularity="channel")
    pruned.compile("sgd", "mse")
    callback = kp.UpdatePruningStep()
    pruned.fit(x, np.zeros((8, 4)), batch_size=8, verbose=0, callbacks=[callback])
    wrapper = pruned.layers[0]
    kept = keras.ops.convert_to_numpy(wrapper.masks[0])[0, 0, 0]
    dropped = int(np.flatnonzero(~kept)[0])
    values = keras.ops.convert_to_numpy(wrapper.layer.kernel)
    values[..., dropped] = np.nan
    wrapper.layer.kernel.assign(values)
    # The next updates rank channels again; the NaN channel stays pruned.
    pruned.fit(
        x, np.zeros((8, 4)), batch_size=8, epochs=2, verbose=0, callbacks=[callback]
    )
    mask = keras.ops.convert_to_numpy(wrapper.masks[0])
    assert not mask[..., dropped].any()
    assert np.all(np.isfinite(wrapper.masked_weights()[0]))


def test_embedding_of_1m_by_64_prunes_in_bounded_memory():
    # 64M float32 weights (256 MiB). A float64 copy alone would be 512 MiB.
    report = run_in_fresh_process(
        """
        import json, resource
        import keras, numpy as np
        import keras_pruning as kp

        wrapper = kp.PruneLowMagnitude(keras.layers.Embedding(1_000_000, 64))
        wrapper.build((None, 4))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wrapper.update_masks(0.9)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mask = keras.ops.convert_to_numpy(wrapper.masks[0])
        weights = keras.ops.convert_to_numpy(wrapper.layer.embeddings)
        print(json.dumps({
            "growth_mib": (after - before) / 1024,
            "peak_mib": after / 1024,
            "kept": int(mask.sum()),
            "zeros": int((weights == 0).sum()),
            "mask_dtype": str(mask.dtype),
            "weights_dtype": str(weights.dtype),
        }))
        """
    )
    assert report["kept"] == 6_400_000
    assert report["zeros"] == 64_000_000 - 6_400_000
    assert report["mask_dtype"] == "bool"
    assert report["weights_dtype"] == "float32"
    # Measured: 1509 MiB growth (about 6 float32 copies), 2968 MiB peak.
    assert report["growth_mib"] < 2048
    assert report["peak_mib"] < 4096
