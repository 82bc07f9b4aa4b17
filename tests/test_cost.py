"""Parameters and MACs per layer, checked by hand."""

import keras
import pytest

import keras_pruning as kp
from keras_pruning.structured import prune_channels

pytestmark = pytest.mark.backends

L = keras.layers


def _cnn():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(8, 3, name="conv"),  # 8x8x8 outputs, 3*3*3 MACs each
            L.DepthwiseConv2D(3, padding="same", name="dw"),  # 8x8x8, 9 each
            L.SeparableConv2D(4, 3, name="sep"),  # 6x6: dw 9*8 + pw 8*4 per pixel
            L.GlobalAveragePooling2D(),
            L.Dense(5, name="dense"),  # 4*5
        ]
    )


def test_macs_and_params_per_layer():
    rows = {r.layer: r for r in kp.model_cost(_cnn())}
    assert rows["conv"].macs == 8 * 8 * 8 * 27
    assert rows["dw"].macs == 8 * 8 * 8 * 9
    assert rows["sep"].macs == 6 * 6 * (9 * 8 + 8 * 4)
    assert rows["dense"].macs == 4 * 5
    assert rows["conv"].params == 3 * 3 * 3 * 8 + 8
    assert rows["dense"].flops == 40
    assert rows["sep"].channels == 4


@pytest.mark.parametrize(
    "conv",
    [
        lambda fmt: L.Conv2D(8, 3, padding="same", data_format=fmt, name="c"),
        lambda fmt: L.SeparableConv2D(8, 3, data_format=fmt, name="c"),
        lambda fmt: L.Conv2DTranspose(8, 2, strides=2, data_format=fmt, name="c"),
    ],
)
def test_channels_first_counts_as_channels_last(conv):
    def row(fmt, shape):
        model = keras.Sequential([keras.Input(shape), conv(fmt)])
        return kp.model_cost(model)[0]

    last = row("channels_last", (12, 10, 3))
    first = row("channels_first", (3, 12, 10))
    assert (first.macs, first.channels, first.params) == (
        last.macs,
        last.channels,
        last.params,
    )
    assert last.channels == 8


def test_time_distributed_counts_its_layer_once_per_step():
    inputs = keras.Input((5, 8))
    distributed = L.TimeDistributed(L.Dense(4), name="td")
    (row,) = kp.model_cost(keras.Model(inputs, distributed(inputs)))
    assert row.macs == 5 * 8 * 4 and row.channels == 4
    frames = keras.Input((5, 3, 7, 9))  # channels first
    conv = L.TimeDistributed(L.Conv2D(4, 3, data_format="channels_first"))
    (row,) = kp.model_cost(keras.Model(frames, conv(frames)))
    assert row.macs == 5 * (4 * 5 * 7) * (3 * 3 * 3) and row.channels == 4


def test_shared_layer_counts_its_params_once_and_its_macs_per_call():
    shared = L.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, shared(shared(inputs)))
    (row,) = [r for r in kp.model_cost(model) if r.layer == "shared"]
    assert row.params == 20 and row.macs == 32


def test_compare_cost_shows_channels_before_and_after():
    model = _cnn()
    small = prune_channels(model, 0.5)
    compared = kp.compare_cost(model, small)
    rows = {r["layer"]: r for r in compared["layers"]}
    assert rows["conv"]["channels"] == (8, 4)
    assert rows["conv"]["macs"] == (8 * 8 * 8 * 27, 8 * 8 * 4 * 27)
    before, after = compared["macs"]
    assert after < before and compared["flops"] == (2 * before, 2 * after)
    assert compared["params"] == (model.count_params(), small.count_params())


def test_pruned_wrappers_are_looked_through_and_bad_input_raises():
    pruned = kp.prune_low_magnitude(_cnn())
    assert [r.macs for r in kp.model_cost(pruned)] == [
        r.macs for r in kp.model_cost(_cnn())
    ]
    with pytest.raises(TypeError, match="model"):
        kp.model_cost(L.Dense(2))
    unbuilt = keras.Sequential([L.Dense(2)], name="unbuilt")
    with pytest.raises(ValueError, match="Received: model='unbuilt'.*not built"):
        kp.model_cost(unbuilt)
