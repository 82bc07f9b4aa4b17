"""prune_to_sparsity: one-shot pruning to an exact sparsity, local or global."""

import keras
import numpy as np
import pytest
from conftest import dense_model

import keras_pruning as kp
from keras_pruning.masks import num_kept

pytestmark = pytest.mark.backends


def _trained_like(model, rng):
    """Distinct random magnitudes, with the second layer much larger."""
    for i, layer in enumerate(model.layers):
        kernel = rng.normal(size=layer.kernel.shape).astype("float32") * (1 + 9 * i)
        layer.kernel.assign(kernel)
    return model


def _kernel_sparsity(model):
    return {r.weight: (r.zeros, r.size) for r in kp.sparsity_report(model)}


def test_local_prunes_each_kernel_to_exactly_the_sparsity(rng):
    model = _trained_like(dense_model(), rng)
    before = [w.copy() for w in model.get_weights()]
    sparse = kp.prune_to_sparsity(model, 0.6)
    for zeros, size in _kernel_sparsity(sparse).values():
        assert zeros == size - num_kept(size, 0.6)
    # A copy: the original keeps its weights, and the copy has no wrappers.
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not kp.pruning_wrappers(sparse) and not sparse.compiled
    kept = sparse.layers[0].kernel.numpy() != 0
    original = np.abs(before[0])
    assert original[kept].min() >= original[~kept].max()


def test_global_reaches_the_total_sparsity_with_one_threshold(rng):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(model, 0.6, global_pruning=True)
    counts = _kernel_sparsity(sparse)
    total = sum(size for _, size in counts.values())
    assert sum(zeros for zeros, _ in counts.values()) == total - num_kept(total, 0.6)
    first, second = (zeros / size for zeros, size in counts.values())
    assert first > 0.6 > second  # the small-magnitude layer gives up more
    survivors = np.concatenate(
        [np.abs(w[w != 0]) for w in (layer.kernel.numpy() for layer in sparse.layers)]
    )
    originals = np.concatenate(
        [np.abs(layer.kernel.numpy()).ravel() for layer in model.layers]
    )
    assert survivors.min() >= np.sort(originals)[-len(survivors)]


def test_layers_selects_what_is_pruned(rng):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(
        model, 0.5, layers=lambda layer: layer is model.layers[1]
    )
    zeros = [int((layer.kernel.numpy() == 0).sum()) for layer in sparse.layers]
    assert zeros[0] == 0 and zeros[1] == np.prod(sparse.layers[1].kernel.shape) // 2


def test_output_matches_a_masked_forward_pass(rng):
    model = _trained_like(dense_model(), rng)
    x = rng.random((4, 8)).astype("float32")
    sparse = kp.prune_to_sparsity(model, 0.5)
    manual = keras.ops.convert_to_numpy(model(x))  # dense
    assert not np.allclose(manual, sparse.predict(x, verbose=0))
    for source, target in zip(model.layers, sparse.layers, strict=True):
        source.kernel.assign(target.kernel.numpy())
        source.bias.assign(target.bias.numpy())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), sparse.predict(x, verbose=0), atol=1e-6
    )


def test_nested_models_are_pruned(rng):
    inner = dense_model()
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    sparse = kp.prune_to_sparsity(model, 0.5)
    assert len(kp.sparsity_report(sparse)) == 3
    assert all(r.sparsity == 0.5 for r in kp.sparsity_report(sparse))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sparsity": 1.0}, ValueError, r"`sparsity` must be a float in \[0, 1\)"),
        ({"sparsity": "half"}, TypeError, "`sparsity` must be a float"),
        (
            {"sparsity": 0.5, "global_pruning": "yes"},
            TypeError,
            "`global_pruning` must be True or False",
        ),
        (
            {"sparsity": 0.5, "layers": "nothing_here"},
            ValueError,
            r"`layers` names layers that model .* does not have: \['nothing_here'\]",
        ),
        (
            {"sparsity": 0.5, "layers": keras.layers.Conv2D},
            ValueError,
            "No prunable weights",
        ),
        (
            {
                "sparsity": 0.5,
                "global_pruning": True,
                "sparsity_bounds": {"D2": (0, 0.1)},
            },
            ValueError,
            r"`sparsity_bounds` names layers .* does not have: \['D2'\]",
        ),
        ({}, TypeError, "`sparsity` must be a float.*Received: sparsity=None"),
        (
            {"sparsity": 0.5, "block_size": (0, 16)},
            ValueError,
            r"`block_size` must be a pair.*Received: block_size=\(0, 16\)",
        ),
        (
            {"sparsity": 0.5, "block_pooling_type": "min"},
            ValueError,
            "`block_pooling_type` must be one of",
        ),
        (
            {"sparsity_m_by_n": (4, 2)},
            ValueError,
            r"1 <= m < n.*Received: sparsity_m_by_n=\(4, 2\)",
        ),
        (
            {"sparsity": 0.5, "sparsity_m_by_n": (2, 4)},
            ValueError,
            r"pass neither `sparsity`.*Received: sparsity=0.5",
        ),
        (
            {"sparsity_m_by_n": (2, 4), "global_pruning": True},
            ValueError,
            "pass neither `sparsity` nor `global_pruning=True`",
        ),
        (
            {"sparsity_m_by_n": (2, 4), "block_size": (2, 2)},
            ValueError,
            "cannot be combined",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        kp.prune_to_sparsity(dense_model(), **kwargs)


def test_numpy_integers_are_a_block_size(rng):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(model, 0.5, block_size=(np.int64(2), 2))
    kernel = keras.ops.convert_to_numpy(sparse.layers[0].kernel)
    assert _blocks_kept(kernel, (2, 2)) == (16, 32)


def test_rejects_wrapped_unbuilt_and_non_models():
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        kp.prune_to_sparsity(keras.layers.Dense(2), 0.5)
    with pytest.raises(ValueError, match="strip_pruning"):
        kp.prune_to_sparsity(kp.prune_low_magnitude(dense_model()), 0.5)
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        kp.prune_to_sparsity(unbuilt, 0.5)


def test_frozen_layers_are_pruned_as_prune_low_magnitude_wraps_them(rng):
    model = _trained_like(dense_model(), rng)
    model.layers[0].trainable = False
    assert len(kp.pruning_wrappers(kp.prune_low_magnitude(model))) == 2
    sparse = kp.prune_to_sparsity(model, 0.5)
    for zeros, size in _kernel_sparsity(sparse).values():
        assert zeros == size // 2


def _blocks_kept(kernel, block_size):
    """`(kept, total)` blocks of a 2-D kernel, asserting each block is all
    zero or all nonzero."""
    r, c = block_size
    rows, cols = kernel.shape
    nonzero = kernel != 0
    corners = nonzero[::r, ::c]
    expanded = np.repeat(np.repeat(corners, r, axis=0), c, axis=1)[:rows, :cols]
    np.testing.assert_array_equal(nonzero, expanded)
    return int(corners.sum()), corners.size


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_block_size_prunes_whole_blocks_of_each_kernel(rng, pooling):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(
        model, 0.5, block_size=(4, 1), block_pooling_type=pooling
    )
    for layer in sparse.layers:
        kept, total = _blocks_kept(layer.kernel.numpy(), (4, 1))
        assert kept == num_kept(total, 0.5)
    assert not any((layer.kernel.numpy() == 0).any() for layer in model.layers)


def test_global_block_pruning_ranks_blocks_of_all_layers(rng):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(model, 0.6, global_pruning=True, block_size=(2, 1))
    counts = [_blocks_kept(layer.kernel.numpy(), (2, 1)) for layer in sparse.layers]
    total = sum(t for _, t in counts)
    assert sum(k for k, _ in counts) == num_kept(total, 0.6)
    first, second = (1 - k / t for k, t in counts)
    assert first > 0.6 > second  # the small-magnitude layer gives up more


def test_m_by_n_keeps_n_minus_m_of_every_group_of_inputs(rng):
    model = _trained_like(dense_model(), rng)
    sparse = kp.prune_to_sparsity(model, sparsity_m_by_n=(2, 4))
    for source, layer in zip(model.layers, sparse.layers, strict=True):
        kernel, original = layer.kernel.numpy(), np.abs(source.kernel.numpy())
        groups = (kernel != 0).T.reshape(kernel.shape[1], -1, 4)
        assert (groups.sum(axis=-1) == 2).all()
        # The two largest of each group survive.
        ranked = np.sort(original.T.reshape(kernel.shape[1], -1, 4), axis=-1)
        kept = np.sort(np.abs(kernel.T).reshape(kernel.shape[1], -1, 4), axis=-1)
        np.testing.assert_array_equal(kept[..., 2:], ranked[..., 2:])


def test_m_by_n_names_an_unsupported_selected_layer():
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(10, 8, name="embed"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    with pytest.raises(ValueError, match="'embed' of class Embedding is not one of"):
        kp.prune_to_sparsity(model, sparsity_m_by_n=(2, 4))
    sparse = kp.prune_to_sparsity(model, sparsity_m_by_n=(1, 2), layers="dense")
    assert [r.sparsity for r in kp.sparsity_report(sparse)] == [0.0, 0.5]
