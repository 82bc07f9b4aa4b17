"""Which weights of which layers are pruned (TFMOT's prune_registry_test), and the
layer-coverage matrix: every supported layer type, pruned and trained."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_pruning as kp
from keras_pruning import registry
from keras_pruning.masks import num_kept

pytestmark = pytest.mark.backends

EVERY_STEP = kp.ConstantSparsity(0.5, 0, frequency=1)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _paths(variables):
    return [v.path for v in variables]


def _assert_same_variables(got, expected):
    assert _paths(got) == _paths(expected)
    assert [id(v) for v in got] == [id(v) for v in expected]


def _by_path(layer, suffixes):
    """`layer`'s weights whose paths end with each of `suffixes`, in that order."""
    found = []
    for suffix in suffixes:
        matches = [w for w in layer.weights if w.path.endswith(f"/{suffix}")]
        assert len(matches) == 1, (suffix, _paths(layer.weights))
        found.append(matches[0])
    return found


def _cell_kernels(rnn):
    return [rnn.cell.kernel, rnn.cell.recurrent_kernel]


def _fit(model, inputs, rng, run_eagerly=False):
    """Trains 2 steps of 2 samples with UpdatePruningStep, on random targets."""
    y = rng.normal(size=model.compute_output_shape(inputs.shape)).astype("float32")
    model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=run_eagerly)
    model.fit(
        inputs,
        y,
        batch_size=2,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[kp.UpdatePruningStep()],
    )


def _call_one(layer, x):
    return layer(x)


def _call_self_attention(layer, x):
    return layer(x, x)


def _case(name, make_layer, shape, expected, dtype="float32", call=_call_one):
    """One row of the matrix: how to make the layer, its input (shape without
    batch, dtype), the weights it must prune (a function of the built layer),
    and how to call it."""
    return pytest.param(make_layer, shape, dtype, expected, call, id=name)


def _kernel(layer):
    return [layer.kernel]


COVERAGE = [
    _case("Dense", lambda: layers.Dense(4), (6,), _kernel),
    _case(
        "EinsumDense",
        lambda: layers.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c"),
        (6,),
        _kernel,
    ),
    _case("Conv1D", lambda: layers.Conv1D(4, 3), (8, 3), _kernel),
    _case("Conv2D", lambda: layers.Conv2D(3, 3), (6, 6, 2), _kernel),
    _case("Conv3D", lambda: layers.Conv3D(2, 3), (4, 4, 4, 1), _kernel),
    _case("Conv1DTranspose", lambda: layers.Conv1DTranspose(3, 3), (5, 2), _kernel),
    _case("Conv2DTranspose", lambda: layers.Conv2DTranspose(3, 3), (4, 4, 2), _kernel),
    _case(
        "Conv3DTranspose", lambda: layers.Conv3DTranspose(2, 2), (3, 3, 3, 1), _kernel
    ),
    _case(
        "SeparableConv1D",
        lambda: layers.SeparableConv1D(4, 3),
        (8, 3),
        lambda layer: [layer.pointwise_kernel],
    ),
    _case(
        "SeparableConv2D",
        lambda: layers.SeparableConv2D(4, 3),
        (6, 6, 3),
        lambda layer: [layer.pointwise_kernel],
    ),
    _case(
        "Embedding",
        lambda: layers.Embedding(10, 4),
        (5,),
        lambda layer: [layer.embeddings],
        dtype="int32",
    ),
    _case(
        "MultiHeadAttention",
        lambda: layers.MultiHeadAttention(num_heads=2, key_dim=3),
        (4, 6),
        lambda layer: _by_path(
            layer,
            ["query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"],
        ),
        call=_call_self_attention,
    ),
    _case("LSTM", lambda: layers.LSTM(4), (3, 2), _cell_kernels),
    _case("GRU", lambda: layers.GRU(4), (3, 2), _cell_kernels),
    _case("SimpleRNN", lambda: layers.SimpleRNN(4), (3, 2), _cell_kernels),
    _case(
        "Bidirectional(LSTM)",
        lambda: layers.Bidirectional(layers.LSTM(3)),
        (3, 2),
        lambda layer: (
            _cell_kernels(layer.forward_layer) + _cell_kernels(layer.backward_layer)
        ),
    ),
    _case(
        "TimeDistributed(Dense)",
        lambda: layers.TimeDistributed(layers.Dense(3)),
        (4, 5),
        lambda layer: [layer.layer.kernel],
    ),
]


@pytest.mark.parametrize(("make_layer", "shape", "dtype", "expected", "call"), COVERAGE)
def test_supported_layer_is_pruned_to_target_sparsity(
    rng, make_layer, shape, dtype, expected, call
):
    layer = make_layer()
    inputs = keras.Input(shape, dtype=dtype)
    model = keras.Model(inputs, call(layer, inputs))
    assert registry.is_prunable(layer)
    expected_weights = expected(layer)
    _assert_same_variables(kp.get_prunable_weights(layer), expected_weights)

    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    (wrapper,) = kp.pruning_wrappers(pruned)
    assert wrapper.layer is layer
    _assert_same_variables(wrapper.prunable_weights, expected_weights)

    if dtype == "int32":
        x = rng.integers(0, 10, (4, *shape)).astype(dtype)
    else:
        x = rng.normal(size=(4, *shape)).astype(dtype)
    _fit(pruned, x, rng, run_eagerly=True)  # compiled: see the next test
    assert wrapper.pruning_step == 2

    report = {row.weight: row for row in kp.sparsity_report(pruned)}
    assert sorted(report) == sorted(_paths(expected_weights))
    for weight, mask in zip(expected_weights, wrapper.masks, strict=True):
        size = int(np.prod(weight.shape))
        pruned_count = _expected_zeros(weight)
        mask = _np(mask)
        assert mask.shape == tuple(weight.shape)
        assert np.count_nonzero(~mask) == pruned_count, weight.path
        assert np.all(_np(weight)[~mask] == 0), weight.path
        assert report[weight.path].zeros == pruned_count
        assert report[weight.path].sparsity == pytest.approx(pruned_count / size)


def _expected_zeros(weight, sparsity=0.5):
    size = int(np.prod(weight.shape))
    return size - num_kept(size, sparsity)


def test_compiled_training_prunes_every_kind_of_layer(rng):
    # The matrix above trains eagerly (fast); here one compiled fit goes through
    # embedding, attention, convolution, RNNs and wrappers of layers together.
    tokens = keras.Input((5,), dtype="int32")
    x = layers.Embedding(10, 6)(tokens)
    x = layers.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.1)(x, x)
    x = layers.Conv1D(4, 3)(x)
    x = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(x)
    x = layers.TimeDistributed(layers.Dense(2))(x)
    x = layers.GRU(2)(x)
    model = keras.Model(tokens, layers.Dense(1)(x))

    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    wrappers = kp.pruning_wrappers(pruned)
    assert [type(w.layer).__name__ for w in wrappers] == [
        "Embedding",
        "MultiHeadAttention",
        "Conv1D",
        "Bidirectional",
        "TimeDistributed",
        "GRU",
        "Dense",
    ]
    attention = wrappers[1].layer
    seed_state = [_np(v).copy() for v in attention.non_trainable_variables]
    _fit(pruned, rng.integers(0, 10, (4, 5)).astype("int32"), rng)
    # The attention dropout drew new masks at each compiled step (PyTorch's
    # dropout draws from torch's own generator, not the seed state).
    assert seed_state
    variables = attention.non_trainable_variables
    for before, variable in zip(seed_state, variables, strict=True):
        changed = not np.array_equal(_np(variable), before)
        assert changed == (keras.backend.backend() != "torch"), variable.path
    for wrapper in wrappers:
        assert wrapper.pruning_step == 2
        for weight, mask in zip(wrapper.prunable_weights, wrapper.masks, strict=True):
            mask = _np(mask)
            assert np.count_nonzero(~mask) == _expected_zeros(weight), weight.path
            assert np.all(_np(weight)[~mask] == 0), weight.path


# --- Layers left dense ----------------------------------------------------------


def test_passthrough_layers_are_left_unwrapped(rng):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Normalization(),
            layers.Conv2D(4, 3),
            layers.DepthwiseConv2D(3),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.LayerNormalization(),
            layers.Dropout(0.1),
            layers.Flatten(),
            layers.Dense(2),
        ]
    )
    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    wrapped = {"Conv2D", "Dense"}
    for old, new in zip(model.layers, pruned.layers, strict=True):
        if type(old).__name__ in wrapped:
            assert isinstance(new, kp.PruneLowMagnitude)
            assert new.layer is old
        else:
            assert new is old, type(old).__name__
            assert registry.is_passthrough(old)
            assert not registry.is_prunable(old)

    depthwise = model.layers[2]
    _fit(pruned, rng.normal(size=(4, 6, 6, 2)).astype("float32"), rng)
    assert np.all(_np(depthwise.kernel) != 0)
    assert [row.layer for row in kp.sparsity_report(pruned)] == [
        w.name for w in kp.pruning_wrappers(pruned)
    ]


def test_weightless_and_known_dense_layers_are_passthrough():
    # TFMOT's testSupportsKerasNonPrunableLayer and testRescalingLayer.
    class CustomLayer(layers.Layer):
        pass

    for layer in (
        layers.Dropout(0.5),
        layers.Rescaling(1.0 / 255),
        layers.Flatten(),
        layers.GroupNormalization(groups=1),
        CustomLayer(),
    ):
        assert registry.is_passthrough(layer), type(layer).__name__
        assert not registry.is_prunable(layer), type(layer).__name__


def test_non_layers_and_unbuilt_layers_get_clear_errors():
    for ask in (registry.is_passthrough, registry.is_prunable):
        with pytest.raises(TypeError, match=r"`layer` must be .*Received: layer='d"):
            ask("dense")
    with pytest.raises(ValueError, match="'fresh' is not built"):
        registry.get_prunable_weights(layers.Dense(3, name="fresh"))


# --- Unsupported layers ---------------------------------------------------------


class Scale(layers.Layer):
    """A custom layer with a trainable weight and no get_prunable_weights."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def test_unsupported_layer_with_weights_raises():
    for layer, class_name in (
        (layers.PReLU(name="odd_one"), "PReLU"),
        (Scale(name="odd_one"), "Scale"),
    ):
        model = keras.Sequential([keras.Input((4,)), layers.Dense(4), layer])
        assert not registry.is_prunable(layer)
        assert not registry.is_passthrough(layer)
        message = rf"'odd_one' of class {class_name}\b(?s:.*)get_prunable_weights\(\)"
        for action, argument in (
            (kp.prune_low_magnitude, model),
            (kp.PruneLowMagnitude, layer),
            (kp.get_prunable_weights, layer),
        ):
            with pytest.raises(ValueError, match=message):
                action(argument)


def test_unsupported_builtin_rnn_layer_is_named():
    # TFMOT's testDoesNotSupportKerasUnsupportedLayer: ConvLSTM2D is a Keras
    # RNN whose cell is not supported. The error must name the layer the user
    # put in the model, not only its internal cell.
    model = keras.Sequential(
        [keras.Input((2, 5, 5, 1)), layers.ConvLSTM2D(2, 3, name="clstm")]
    )
    with pytest.raises(ValueError, match=r"get_prunable_weights\(\)") as info:
        kp.prune_low_magnitude(model)
    assert "ConvLSTM2D" in str(info.value)
    assert "'clstm'" in str(info.value)


# --- RNN cells (TFMOT's RNN registry tests) --------------------------------------


class MinimalRNNCell(layers.Layer):
    """TFMOT's minimal RNN cell: a kernel and a recurrent kernel."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.units))

    def call(self, inputs, states):
        output = inputs @ self.kernel + states[0] @ self.recurrent_kernel
        return output, [output]


class MinimalRNNCellPrunable(MinimalRNNCell, kp.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel, self.recurrent_kernel]


def _rnn(cells):
    rnn = layers.RNN(cells)
    keras.Sequential([keras.Input((3, 4)), rnn])
    return rnn


def test_rnn_layers_and_cells_are_supported():
    # TFMOT's testSupportsKerasRNNLayers and ...WithRNNCellsParams.
    for layer in (
        layers.LSTM(10),
        layers.GRU(10),
        layers.SimpleRNN(10),
        layers.RNN(layers.LSTMCell(10)),
        layers.RNN([layers.LSTMCell(10), layers.GRUCell(10), layers.SimpleRNNCell(10)]),
        layers.RNN(MinimalRNNCellPrunable(32)),
    ):
        assert registry.is_prunable(layer), layer.name


def test_stacked_rnn_cells_prune_kernels_in_order():
    cells = [layers.LSTMCell(4), layers.GRUCell(3), layers.SimpleRNNCell(2)]
    rnn = _rnn(cells)
    expected = [w for cell in cells for w in (cell.kernel, cell.recurrent_kernel)]
    _assert_same_variables(kp.get_prunable_weights(rnn), expected)


def test_rnn_with_prunable_custom_cell_uses_its_weights():
    cells = [layers.LSTMCell(4), MinimalRNNCellPrunable(3)]
    rnn = _rnn(cells)
    expected = [w for cell in cells for w in (cell.kernel, cell.recurrent_kernel)]
    _assert_same_variables(kp.get_prunable_weights(rnn), expected)


def test_rnn_with_unknown_cell_raises():
    # TFMOT's testDoesNotSupportKerasRNNLayerUnknownCell and
    # testMakePrunableRaisesErrorOnRNNLayersUnsupportedCell.
    for cells in (MinimalRNNCell(3), [layers.LSTMCell(4), MinimalRNNCell(3)]):
        model = keras.Sequential([keras.Input((3, 4)), layers.RNN(cells)])
        message = r"class MinimalRNNCell\b(?s:.*)get_prunable_weights\(\)"
        with pytest.raises(ValueError, match=message):
            kp.prune_low_magnitude(model)


# --- Subclasses and custom layers -----------------------------------------------


def test_subclass_of_dense_is_prunable(rng):
    # TFMOT rejects subclasses (exact-class lookup); isinstance accepts them.
    class MyDense(layers.Dense):
        pass

    layer = MyDense(4)
    model = keras.Sequential([keras.Input((6,)), layer])
    assert registry.is_prunable(layer)
    _assert_same_variables(kp.get_prunable_weights(layer), [layer.kernel])
    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    _fit(pruned, rng.normal(size=(4, 6)).astype("float32"), rng)
    assert np.count_nonzero(_np(layer.kernel)) == 12


class TwoKernels(layers.Layer):
    """Custom layer with two kernels; only `kernel` is meant to be pruned."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 6), name="kernel")
        self.gate = self.add_weight(shape=(input_shape[-1], 6), name="gate")

    def call(self, inputs):
        return (inputs @ self.kernel) * keras.ops.sigmoid(inputs @ self.gate)

    def get_prunable_weights(self):
        return [self.kernel]


class TwoKernelsPrunable(TwoKernels, kp.PrunableLayer):
    pass


@pytest.mark.parametrize("cls", [TwoKernels, TwoKernelsPrunable])
def test_custom_layer_prunes_exactly_the_weights_it_returns(rng, cls):
    layer = cls()
    model = keras.Sequential([keras.Input((4,)), layer])
    assert registry.is_prunable(layer)
    pruned = kp.prune_low_magnitude(model, EVERY_STEP)
    (wrapper,) = kp.pruning_wrappers(pruned)
    _assert_same_variables(wrapper.prunable_weights, [layer.kernel])
    assert len(wrapper.masks) == 1

    _fit(pruned, rng.normal(size=(4, 4)).astype("float32"), rng)
    assert np.count_nonzero(_np(layer.kernel)) == 12
    assert np.count_nonzero(_np(layer.gate)) == 24
    assert [row.weight for row in kp.sparsity_report(pruned)] == [layer.kernel.path]


def test_prunable_layer_requires_get_prunable_weights():
    class Incomplete(layers.Layer, kp.PrunableLayer):
        pass

    with pytest.raises(TypeError, match="get_prunable_weights"):
        Incomplete()


def test_pruning_does_not_patch_methods_onto_user_layers():
    # TFMOT's make_prunable adds get_prunable_weights to the layer object.
    dense, lstm = layers.Dense(2), layers.LSTM(2)
    model = keras.Sequential([keras.Input((3, 4)), lstm, dense])
    kp.prune_low_magnitude(model)
    for layer in (dense, lstm):
        assert not hasattr(layer, "get_prunable_weights")


@pytest.mark.parametrize(
    ("make_layer", "axis"),
    [
        (lambda: layers.Dense(3), -2),
        (lambda: layers.Conv1D(3, 2), -2),
        (lambda: layers.Conv2D(3, 2), -2),
        (lambda: layers.Conv3D(3, 2), -2),
        (lambda: layers.EinsumDense("ab,bc->ac", 3), -2),
        (lambda: layers.EinsumDense("ab,cb->ac", 3), -1),
        (lambda: layers.EinsumDense("abc,cde->abde", (None, 2, 3)), -3),
        (lambda: layers.EinsumDense("abcd,cde->abe", (None, 3)), -2),
        (lambda: layers.EinsumDense("...b,bc->...c", 3), -2),
        (lambda: layers.EinsumDense("ab,bc->abc", (2, 3)), None),
        (lambda: layers.Conv2DTranspose(3, 2), None),
        (lambda: layers.SeparableConv2D(3, 2), None),
        (lambda: layers.Embedding(5, 3), None),
        (lambda: layers.LSTM(3), None),
    ],
)
def test_input_channel_axis(make_layer, axis):
    assert registry.input_channel_axis(make_layer()) == axis
