"""Pruning policies: PruningPolicy, PruneForLatencyOnXNNPack and pad_for_xnnpack."""

import keras
import numpy as np
import pytest
from conftest import dense_model, run_in_fresh_process
from keras import layers

import keras_pruning as kp

pytestmark = pytest.mark.backends

XNNPACK = kp.PruneForLatencyOnXNNPack()


def _wrapped(model):
    return sorted(w.layer.name for w in kp.pruning_wrappers(model))


def _stem(inputs, filters=16):
    """The start XNNPACK needs: ZeroPadding2D(1), then a 3x3 stride-2 'valid' conv."""
    x = layers.ZeroPadding2D(padding=1)(inputs)
    return layers.Conv2D(filters, 3, strides=2, padding="valid", name="stem")(x)


def _xnnpack_model(middle=lambda x: layers.Conv2D(16, 1, name="pointwise")(x)):
    inputs = keras.Input((8, 8, 3))
    x = middle(_stem(inputs))
    outputs = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def mobilenet():
    """Keras's MobileNetV2 nested in a functional model with a pooled head."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((96, 96, 3))
    x = layers.GlobalAveragePooling2D(name="pool")(base(inputs))
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(10, name="classifier")(x)
    return keras.Model(inputs, outputs, name="classifier_model")


@pytest.fixture(scope="module")
def padded_mobilenet(mobilenet):
    return kp.pad_for_xnnpack(mobilenet)


def _pointwise_names(model):
    """The 1x1 Conv2D layers of MobileNetV2, from its layer list."""
    base = model.layers[1]
    return sorted(
        layer.name
        for layer in base.layers
        if type(layer) is layers.Conv2D and layer.kernel_size == (1, 1)
    )


def test_mobilenetv2_after_pad_for_xnnpack_wraps_exactly_the_1x1_convolutions(
    padded_mobilenet,
):
    pruned = kp.prune_low_magnitude(padded_mobilenet, pruning_policy=XNNPACK)
    expected = _pointwise_names(padded_mobilenet)
    assert len(expected) == 34  # 16 expand + 17 project + Conv_1
    assert _wrapped(pruned) == expected
    assert "classifier" not in expected and "Conv1" not in expected


def test_keras_mobilenetv2_pads_on_one_side_and_is_rejected_naming_conv1(mobilenet):
    with pytest.raises(
        ValueError,
        match=r"every input branch .* must start the sparse subgraph.*"
        r"pad_for_xnnpack.*Received: Conv2D 'Conv1' with padding='same' "
        r"\(expected 'valid'\); input from InputLayer",
    ):
        kp.prune_low_magnitude(mobilenet, pruning_policy=XNNPACK)


def test_pad_for_xnnpack_rewrites_paddings_and_keeps_shapes_and_weights(
    mobilenet, padded_mobilenet
):
    base, ready = mobilenet.layers[1], padded_mobilenet.layers[1]
    assert ready.get_layer("Conv1").padding == "valid"
    assert tuple(map(tuple, ready.get_layer("Conv1_pad").padding)) == ((1, 1), (1, 1))
    # correct_pad's one-sided ((0, 1), (0, 1)) in front of stride-2 depthwise
    # convolutions (input 96: every stride-2 block sees an even size).
    assert tuple(map(tuple, base.get_layer("block_1_pad").padding)) == ((0, 1), (0, 1))
    assert tuple(map(tuple, ready.get_layer("block_1_pad").padding)) == ((1, 1), (1, 1))
    assert padded_mobilenet.output_shape == mobilenet.output_shape
    for old, new in zip(
        mobilenet.get_weights(), padded_mobilenet.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    assert ready.get_layer("Conv1") is not base.get_layer("Conv1")  # a copy


def test_pad_for_xnnpack_keeps_outputs_where_same_padding_was_symmetric():
    # Input 97: every stride-2 layer sees an odd size, where 'same' pads
    # (1, 1); only Conv1 is rewritten, and the outputs stay the same.
    base = keras.applications.MobileNetV2(
        input_shape=(97, 97, 3),
        alpha=0.35,
        include_top=False,
        weights=None,
        pooling="avg",
    )
    ready = kp.pad_for_xnnpack(base)
    x = np.random.default_rng(0).random((2, 97, 97, 3)).astype("float32")
    np.testing.assert_allclose(
        ready.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-5
    )
    pruned = kp.prune_low_magnitude(ready, pruning_policy=XNNPACK)
    assert len(kp.pruning_wrappers(pruned)) == 34


def test_pad_for_xnnpack_sequential_inserts_zero_padding():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, strides=2, padding="same", name="stem"),
            layers.Conv2D(8, 1),
            layers.GlobalAveragePooling2D(),
        ]
    )
    ready = kp.pad_for_xnnpack(model)
    assert [type(layer).__name__ for layer in ready.layers] == [
        "ZeroPadding2D",
        "Conv2D",
        "Conv2D",
        "GlobalAveragePooling2D",
    ]
    assert ready.layers[0].name == "stem_pad" and ready.layers[1].padding == "valid"
    pruned = kp.prune_low_magnitude(ready, pruning_policy=XNNPACK)
    assert len(kp.pruning_wrappers(pruned)) == 1


def test_pad_for_xnnpack_keeps_a_shared_layer_shared():
    shared = layers.Conv2D(4, 3, strides=2, padding="same", name="shared")
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    model = keras.Model([first, second], layers.Add()([shared(first), shared(second)]))
    ready = kp.pad_for_xnnpack(model)
    convs = [layer for layer in ready.layers if isinstance(layer, layers.Conv2D)]
    pads = [layer for layer in ready.layers if isinstance(layer, layers.ZeroPadding2D)]
    assert len(convs) == 1 and len(pads) == 1 and pads[0].name == "shared_pad"
    np.testing.assert_array_equal(convs[0].get_weights()[0], shared.get_weights()[0])


def test_pad_for_xnnpack_rejects_subclassed_and_unbuilt_models():
    with pytest.raises(ValueError, match="without an input shape"):
        kp.pad_for_xnnpack(keras.Sequential([layers.Conv2D(2, 3)]))

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="of class Net"):
        kp.pad_for_xnnpack(Net())


def test_policy_combines_with_layers_selection(padded_mobilenet):
    chosen = ["block_1_expand", "block_1_project", "classifier", "Conv1"]
    pruned = kp.prune_low_magnitude(
        padded_mobilenet, pruning_policy=XNNPACK, layers=chosen
    )
    assert _wrapped(pruned) == ["block_1_expand", "block_1_project"]
    per_layer = kp.prune_low_magnitude(
        padded_mobilenet,
        {layers.Conv2D: kp.ConstantSparsity(0.8, 0)},
        pruning_policy=XNNPACK,
    )
    wrappers = kp.pruning_wrappers(per_layer)
    assert len(wrappers) == 34
    assert {w.pruning_schedule.target_sparsity for w in wrappers} == {0.8}


def test_sequential_model_and_nested_sequential():
    inner = keras.Sequential([layers.Conv2D(8, 1), layers.Conv2D(16, 1)])
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.ZeroPadding2D(padding=1),
            layers.Conv2D(4, 3, strides=2),
            layers.DepthwiseConv2D(3, padding="same"),
            inner,
            layers.GlobalAveragePooling2D(),
        ]
    )
    pruned = kp.prune_low_magnitude(model, pruning_policy=XNNPACK)
    assert _wrapped(pruned) == sorted(layer.name for layer in inner.layers)


def test_shared_layer_is_wrapped_once():
    shared = layers.Conv2D(16, 1, name="shared")
    model = _xnnpack_model(lambda x: shared(shared(x)))
    pruned = kp.prune_low_magnitude(model, pruning_policy=XNNPACK)
    assert _wrapped(pruned) == ["shared"]


def test_model_without_1x1_convolutions_gets_no_wrapper():
    model = _xnnpack_model(
        lambda x: layers.Activation("relu")(
            layers.DepthwiseConv2D(3, padding="same")(x)
        )
    )
    pruned = kp.prune_low_magnitude(model, pruning_policy=XNNPACK)
    assert kp.pruning_wrappers(pruned) == []


def test_two_inputs_two_outputs_squeeze_and_upsampling():
    # TFMOT's testFunctionalModelForLatencyOnXNNPackPolicy, in Keras 3.
    in1, in2 = keras.Input((16, 16, 3)), keras.Input((16, 16, 3))
    x1 = _stem(in1)
    x1 = layers.Add()(
        [layers.DepthwiseConv2D(3, padding="same")(x1), layers.Conv2D(16, 1)(x1)]
    )
    x2 = layers.Conv2D(8, 3, strides=2)(layers.ZeroPadding2D(1)(in2))
    x2 = layers.DepthwiseConv2D(3, strides=2)(layers.ZeroPadding2D(1)(x2))
    squeeze = layers.GlobalAveragePooling2D(keepdims=True)(x2)
    squeeze = layers.Activation("sigmoid")(layers.Conv2D(32, 1)(squeeze))
    x2 = layers.UpSampling2D(interpolation="bilinear")(layers.Conv2D(32, 1)(x2))
    x2 = layers.Conv2D(16, 1)(layers.Multiply()([squeeze, x2]))
    x = layers.GlobalAveragePooling2D(keepdims=True)(layers.Add()([x1, x2]))
    model = keras.Model([in1, in2], [layers.Conv2D(7, 1)(x), layers.Conv2D(3, 1)(x)])
    pruned = kp.prune_low_magnitude(model, pruning_policy=XNNPACK)
    assert len(kp.pruning_wrappers(pruned)) == 6


def test_keras_ops_add_and_multiply_are_supported_subtract_is_not():
    def residual(x):
        r = layers.Conv2D(16, 1, name="pointwise")(x)
        return (x + r) * r

    pruned = kp.prune_low_magnitude(_xnnpack_model(residual), pruning_policy=XNNPACK)
    assert _wrapped(pruned) == ["pointwise"]
    with pytest.raises(ValueError, match="Received: the keras.ops operation Subtract"):
        kp.prune_low_magnitude(
            _xnnpack_model(lambda x: x - layers.Conv2D(16, 1)(x)),
            pruning_policy=XNNPACK,
        )


@pytest.mark.parametrize(
    ("stem", "received"),
    [
        (
            lambda i: layers.Conv2D(16, 3, strides=2, padding="same", name="c")(i),
            r"Conv2D 'c' with padding='same' \(expected 'valid'\); input from "
            r"InputLayer '\w+' \(expected ZeroPadding2D\(padding=1\)\)",
        ),
        (
            lambda i: layers.Conv2D(16, 3, strides=1, name="c")(
                layers.ZeroPadding2D(1)(i)
            ),
            r"Conv2D 'c' with strides=\(1, 1\) \(expected \(2, 2\)\)",
        ),
        (
            lambda i: layers.Conv2D(16, 3, strides=2, name="c")(
                layers.ZeroPadding2D(((0, 1), (0, 1)))(i)
            ),
            r"Conv2D 'c' with input from ZeroPadding2D\(padding=\(\(0, 1\), "
            r"\(0, 1\)\)\) \(expected ZeroPadding2D\(padding=1\)\)",
        ),
        (
            lambda i: layers.Conv2D(16, 3, strides=2, name="c")(
                layers.ZeroPadding2D(1)(layers.Conv2D(4, 1, name="first")(i))
            ),
            r"Conv2D 'first' with kernel_size=\(1, 1\) \(expected \(3, 3\)\); "
            r"strides=\(1, 1\).*; input from InputLayer",
        ),
        (lambda i: layers.MaxPooling2D()(i), "no Conv2D on this branch"),
    ],
    ids=["same-padding", "stride-1", "one-sided-padding", "4-channels", "no-conv"],
)
def test_model_without_a_start_convolution_names_the_closest_one(stem, received):
    inputs = keras.Input((8, 8, 3))
    outputs = layers.GlobalAveragePooling2D()(stem(inputs))
    with pytest.raises(
        ValueError,
        match=r"PruneForLatencyOnXNNPack: every input branch of model '\w+' must "
        r"start the sparse subgraph with a Conv2D with a 3x3 kernel, strides 2, "
        r".*Received: " + received,
    ):
        kp.prune_low_magnitude(keras.Model(inputs, outputs), pruning_policy=XNNPACK)


def test_model_without_global_average_pooling_is_rejected():
    inputs = keras.Input((8, 8, 3))
    outputs = layers.AveragePooling2D(2)(layers.Conv2D(16, 1)(_stem(inputs)))
    with pytest.raises(
        ValueError,
        match=r"every output branch of model '\w+' must pass a "
        r"GlobalAveragePooling2D.*Received: a path from the outputs "
        r"\(AveragePooling2D '\w+'\) back to InputLayer '\w+' without one",
    ):
        kp.prune_low_magnitude(keras.Model(inputs, outputs), pruning_policy=XNNPACK)


@pytest.mark.parametrize(
    ("middle", "received"),
    [
        (lambda x: layers.MaxPooling2D(name="m")(x), r"MaxPooling2D 'm'$"),
        (
            lambda x: layers.Reshape((1, 1, 16))(
                layers.GlobalAveragePooling2D(name="m")(x)
            ),
            r"GlobalAveragePooling2D 'm' with keepdims=False",
        ),
        (
            lambda x: layers.Conv2D(16, 3, padding="same", name="m")(x),
            r"Conv2D 'm' with kernel_size=\(3, 3\)",
        ),
        (
            lambda x: layers.DepthwiseConv2D(3, strides=2, name="m")(
                layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
            ),
            r"DepthwiseConv2D 'm' with kernel_size=\(3, 3\), strides=\(2, 2\), "
            r"padding='valid', depth_multiplier=1, dilation_rate=\(1, 1\), after "
            r"ZeroPadding2D\(padding=\(\(0, 1\), \(0, 1\)\)\)",
        ),
        (
            lambda x: layers.DepthwiseConv2D(3, strides=2, padding="same", name="m")(x),
            r"DepthwiseConv2D 'm' with .* padding='same'",
        ),
        (
            lambda x: layers.Activation("tanh", name="m")(x),
            r"Activation 'm' with activation='tanh'",
        ),
        (
            lambda x: layers.UpSampling2D(name="m")(x),
            r"UpSampling2D 'm' with interpolation='nearest'",
        ),
        (
            lambda x: layers.BatchNormalization(axis=1, name="m")(x),
            r"BatchNormalization 'm' with axis=1",
        ),
    ],
    ids=["max-pooling", "flat-pooling", "3x3-conv", "one-sided-depthwise", "same-stride-2-depthwise",
         "tanh", "nearest-upsampling", "bn-axis-1"],
)  # fmt: skip
def test_unsupported_layer_in_the_subgraph_is_named(middle, received):
    with pytest.raises(
        ValueError,
        match=r"Layer \w+ 'm' is not supported by the PruneForLatencyOnXNNPack "
        r"pruning policy: it lies between the start convolution Conv2D 'stem' and "
        r"a GlobalAveragePooling2D.*Supported: Conv2D with a 1x1 kernel.*"
        r"Received: " + received,
    ):
        kp.prune_low_magnitude(_xnnpack_model(middle), pruning_policy=XNNPACK)


def test_supported_layers_pass_the_check():
    def middle(x):
        x = layers.BatchNormalization()(layers.Conv2D(16, 1)(x))
        x = layers.ReLU(6.0)(x)
        x = layers.DepthwiseConv2D(5, padding="same")(x)
        x = layers.DepthwiseConv2D(5, strides=2)(layers.ZeroPadding2D(2)(x))
        x = layers.Dropout(0.1)(layers.ELU()(layers.LeakyReLU()(x)))
        return layers.Activation("relu6")(layers.Conv2D(16, 1)(x))

    pruned = kp.prune_low_magnitude(_xnnpack_model(middle), pruning_policy=XNNPACK)
    assert len(kp.pruning_wrappers(pruned)) == 2


def test_unbuilt_sequential_and_subclassed_models_are_rejected():
    unbuilt = keras.Sequential([layers.ZeroPadding2D(1), layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="not built: start it with a `keras.Input"):
        kp.prune_low_magnitude(unbuilt, pruning_policy=XNNPACK)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 1)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match="of class Net is a subclassed model"):
        kp.prune_low_magnitude(Net(), pruning_policy=XNNPACK)


def test_the_xnnpack_check_needs_a_model():
    with pytest.raises(TypeError, match="checks a keras.Model.*of type str"):
        XNNPACK.ensure_model_supports_pruning("model")


def test_already_pruned_model_is_rejected_before_the_policy_runs():
    pruned = kp.prune_low_magnitude(_xnnpack_model(), pruning_policy=XNNPACK)
    with pytest.raises(ValueError, match="already pruned.*strip_pruning"):
        kp.prune_low_magnitude(pruned, pruning_policy=XNNPACK)


def test_policy_needs_a_model_and_a_pruning_policy_instance():
    with pytest.raises(TypeError, match="to prune a single layer or a list"):
        kp.prune_low_magnitude(layers.Conv2D(4, 1), pruning_policy=XNNPACK)
    with pytest.raises(TypeError, match="`to_prune` is a list"):
        kp.prune_low_magnitude([layers.Conv2D(4, 1)], pruning_policy=XNNPACK)
    with pytest.raises(TypeError, match="must be a keras_pruning.PruningPolicy.*"):
        kp.prune_low_magnitude(dense_model(), pruning_policy="xnnpack")


class _DenseWiderThan(kp.PruningPolicy):
    """A user policy: Dense layers with more than `units` units."""

    def __init__(self, units):
        self.units = units

    def allow_pruning(self, layer):
        return isinstance(layer, layers.Dense) and layer.units > self.units


def test_user_policy_allows_layers_and_keeps_the_others_dense():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(32, name="wide"),
            layers.PReLU(),  # unsupported, but the policy never allows it
            layers.Dense(4, name="narrow"),
        ]
    )
    pruned = kp.prune_low_magnitude(model, pruning_policy=_DenseWiderThan(8))
    assert _wrapped(pruned) == ["wide"]
    assert type(pruned.layers[2]) is layers.Dense


def test_user_policy_check_runs_first_on_the_whole_model():
    class NoBatchNorm(kp.PruningPolicy):
        def allow_pruning(self, layer):
            return True

        def ensure_model_supports_pruning(self, model):
            for layer in model._flatten_layers(include_self=False):
                if isinstance(layer, layers.BatchNormalization):
                    raise ValueError(f"no BatchNormalization. Received: {layer.name}")

    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(4), layers.BatchNormalization(name="bn")]
    )
    with pytest.raises(ValueError, match="Received: bn"):
        kp.prune_low_magnitude(model, pruning_policy=NoBatchNorm())
    assert repr(NoBatchNorm()) == "NoBatchNorm()"


def test_policy_is_asked_about_layers_inside_nested_models():
    inner = keras.Sequential(
        [keras.Input((8,)), layers.Dense(16, name="in_wide"), layers.Dense(2)]
    )
    inputs = keras.Input((8,))
    outputs = layers.Dense(32, name="out_wide")(inner(inputs))
    pruned = kp.prune_low_magnitude(
        keras.Model(inputs, outputs), pruning_policy=_DenseWiderThan(8)
    )
    assert _wrapped(pruned) == ["in_wide", "out_wide"]


def test_pruned_model_saves_and_loads_in_a_fresh_process(tmp_path):
    pruned = kp.prune_low_magnitude(
        kp.pad_for_xnnpack(_xnnpack_model()),
        kp.ConstantSparsity(0.5, 0, frequency=1),
        pruning_policy=XNNPACK,
    )
    x = np.random.default_rng(0).random((16, 8, 8, 3)).astype("float32")
    pruned.compile("sgd", "mse")
    pruned.fit(x, np.zeros((16, 16)), verbose=0, callbacks=[kp.UpdatePruningStep()])
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", pruned.predict(x, verbose=0))
    script = f"""
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np
        import keras_pruning
        model = keras.models.load_model({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        error = np.abs(model.predict(x, verbose=0) - np.load({str(tmp_path / "expected.npy")!r}))
        print(json.dumps([
            [w.layer.name for w in keras_pruning.pruning_wrappers(model)],
            float(error.max()),
        ]))
        """
    names, error = run_in_fresh_process(script)
    assert names == ["pointwise"] and error < 1e-6
