"""The three Keras backends side by side, each in its own process: the same
weights and schedule give the same masks, and a model trained on JAX or
PyTorch exports from TensorFlow."""

import keras
import numpy as np
import pytest
from conftest import run_in_fresh_process

import keras_pruning as kp
from keras_pruning import export

BACKENDS = ("tensorflow", "jax", "torch")

# Trains each pattern with lr = 0 from weights drawn by NumPy, then saves the
# magnitude-pruned model; prints the masks of every pattern.
TRAIN = """
    import json, os
    import keras, numpy as np
    import keras_pruning as kp

    folder = {folder!r}
    rng = np.random.default_rng(0)
    x = rng.random((24, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 24)
    weights = None

    def model():
        global weights
        m = keras.Sequential([
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="out"),
        ])
        if weights is None:  # no ties; positive variances
            weights = [rng.uniform(0.5, 1.5, w.shape)
                       * (1 if "variance" in w.path else rng.choice([-1, 1], w.shape))
                       for w in m.weights]
        m.set_weights([w.astype("float32") for w in weights])
        return m

    schedule = kp.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=4, frequency=2)
    patterns = {{
        "magnitude": {{}},
        "block": {{"block_size": (2, 1), "block_pooling_type": "max"}},
        "m_by_n": {{"sparsity_m_by_n": (2, 4), "layers": ["hidden", "out"]}},
        "channel": {{"granularity": "channel"}},
    }}
    masks = {{}}
    for name, arguments in patterns.items():
        pruned = kp.prune_low_magnitude(model(), schedule, **arguments)
        pruned.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
        pruned.fit(x, y, batch_size=4, shuffle=False, verbose=0,
                   callbacks=[kp.UpdatePruningStep()])
        masks[name] = [keras.ops.convert_to_numpy(m).astype(int).tolist()
                       for w in kp.pruning_wrappers(pruned) for m in w.masks]
        if name == "magnitude":
            pruned.save(os.path.join(folder, "pruned.keras"))
            np.save(os.path.join(folder, "x.npy"), x)
            np.save(os.path.join(folder, "predictions.npy"),
                    keras.ops.convert_to_numpy(pruned(x, training=False)))
    one_shot = kp.prune_to_sparsity(model(), 0.7, global_pruning=True)
    masks["global"] = [(keras.ops.convert_to_numpy(w) != 0).astype(int).tolist()
                       for w in one_shot.weights if "kernel" in w.path]
    print(json.dumps(masks))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`{backend: (masks by pattern, folder with the saved model)}`."""
    results = {}
    for backend in BACKENDS:
        folder = tmp_path_factory.mktemp(backend)
        masks = run_in_fresh_process(TRAIN.format(folder=str(folder)), backend)
        results[backend] = (masks, folder)
    return results


@pytest.mark.parametrize(
    "pattern", ["magnitude", "block", "m_by_n", "channel", "global"]
)
def test_same_masks_on_every_backend(trained, pattern):
    reference = trained["tensorflow"][0][pattern]
    assert 0 < np.mean(np.concatenate([np.ravel(m) for m in reference])) < 1
    for backend in ("jax", "torch"):
        masks = trained[backend][0][pattern]
        assert len(masks) == len(reference)
        for expected, actual in zip(reference, masks, strict=True):
            np.testing.assert_array_equal(actual, expected, err_msg=backend)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_model_trained_on_another_backend_exports_from_tensorflow(trained, backend):
    folder = trained[backend][1]
    model = keras.models.load_model(folder / "pruned.keras")
    x = np.load(folder / "x.npy")
    expected = np.load(folder / "predictions.npy")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=False)), expected, atol=1e-5
    )
    data = export.to_tflite(model)
    result = export.verify(data, model, x)
    assert result.max_abs_error < 1e-4
    kernels = [r for r in kp.sparsity_report(model) if r.weight.endswith("kernel")]
    assert [r.sparsity for r in kernels] == pytest.approx([0.6] * 3, abs=0.03)
