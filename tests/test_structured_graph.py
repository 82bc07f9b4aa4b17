"""Dependency groups on small graphs, checked by hand."""

import keras
import pytest

from keras_pruning.structured import Member, dependency_groups

pytestmark = pytest.mark.backends

L = keras.layers


def _by_producers(model, **kwargs):
    return {g.producers: g for g in dependency_groups(model, **kwargs)}


def _members(group):
    return {(m.layer, m.weight, m.axis, m.role) for m in group.members}


def test_sequential_cnn_with_batchnorm():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3, name="c1"),
            L.BatchNormalization(name="bn"),
            L.ReLU(),
            L.MaxPooling2D(),
            L.Conv2D(6, 1, name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(2, name="out"),
        ]
    )
    groups = _by_producers(model)
    assert set(groups) == {(), ("c1",), ("c2",), ("out",)}
    c1 = groups[("c1",)]
    assert c1.prunable and c1.size == 4
    assert _members(c1) == {
        ("c1", "kernel", -1, "out"),
        ("c1", "bias", 0, "out"),
        ("bn", "gamma", 0, "param"),
        ("bn", "beta", 0, "param"),
        ("bn", "moving_mean", 0, "param"),
        ("bn", "moving_variance", 0, "param"),
        ("c2", "kernel", -2, "in"),
    }
    assert _members(groups[("c2",)]) == {
        ("c2", "kernel", -1, "out"),
        ("c2", "bias", 0, "out"),
        ("out", "kernel", 0, "in"),
    }
    assert not groups[("out",)].prunable
    assert groups[("out",)].reason == "model output"
    assert not groups[()].prunable and groups[()].reason == "model input"


def _branching_model():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(8, 1, name="b")(a)
    added = L.Add(name="add")([a, b])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(added)
    c = L.Conv2D(6, 1, name="c")(d)
    cat = L.Concatenate(name="cat")([added, c])
    e = L.Conv2D(4, 1, name="e")(cat)
    flat = L.Flatten()(e)
    outputs = L.Dense(3, name="head")(flat)
    return keras.Model(inputs, outputs)


def test_add_couples_both_producers_into_one_group():
    groups = _by_producers(_branching_model())
    coupled = groups[("a", "b")]
    assert coupled.prunable and coupled.size == 8
    assert {(m.layer, m.axis, m.role) for m in coupled.members} == {
        ("a", -1, "out"),
        ("a", 0, "out"),
        ("b", -2, "in"),  # b reads a's channels ...
        ("b", -1, "out"),  # ... and makes the same group's channels
        ("b", 0, "out"),
        ("dw", -2, "param"),  # the depthwise kernel passes channels through
        ("dw", 0, "param"),
        ("c", -2, "in"),
        ("e", -2, "in"),  # through the Concatenate
    }


def test_concatenate_maps_channel_ranges_and_flatten_tiles_them():
    groups = _by_producers(_branching_model())
    assert _members(groups[("c",)]) >= {("e", "kernel", -2, "in")}
    assert _members(groups[("e",)]) == {
        ("e", "kernel", -1, "out"),
        ("e", "bias", 0, "out"),
        ("head", "kernel", 0, "in"),
    }


def test_nested_model_is_traced_through():
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in, L.Dense(5, name="inner_dense")(inner_in), name="inner"
    )
    inputs = keras.Input((4,))
    x = L.Dense(6, name="first")(inputs)
    outputs = L.Dense(2, name="last")(inner(x))
    groups = _by_producers(keras.Model(inputs, outputs))
    assert groups[("first",)].prunable
    assert _members(groups[("first",)]) >= {("inner_dense", "kernel", 0, "in")}
    assert _members(groups[("inner_dense",)]) >= {("last", "kernel", 0, "in")}


def test_wrapped_layers_are_traced_as_their_inner_layer():
    import keras_pruning as kp

    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="d1"), L.Dense(2, name="d2")]
    )
    pruned = kp.prune_low_magnitude(model)
    assert _by_producers(pruned).keys() == _by_producers(model).keys()


def test_softmax_over_channels_stops_the_group():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="d1"), L.Softmax(), L.Dense(2, name="d2")]
    )
    group = _by_producers(model)[("d1",)]
    assert not group.prunable
    assert "mixes channels" in group.reason


@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_a_softmax_activation_stops_the_group_it_makes(activation):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            L.Dense(6, name="d1"),
            L.Dense(5, activation=activation, name="d2"),
            L.Dense(2, name="d3"),
        ]
    )
    groups = _by_producers(model)
    assert not groups[("d2",)].prunable
    assert "its activation" in groups[("d2",)].reason
    assert groups[("d1",)].prunable  # the layer's input channels still are


def test_a_softmax_over_axes_with_the_channels_stops_the_group():
    def model(axis):
        return keras.Sequential(
            [
                keras.Input((3, 4)),
                L.Dense(6, name="d1"),
                L.Softmax(axis=axis),
                L.Dense(2, name="d2"),
            ]
        )

    assert not _by_producers(model([1, 2]))[("d1",)].prunable
    assert _by_producers(model(1))[("d1",)].prunable  # along time only


@pytest.mark.parametrize("axis", [1, [1, 2]])
def test_layer_normalization_over_other_axes_raises_naming_it(axis):
    model = keras.Sequential(
        [
            keras.Input((3, 4)),
            L.Dense(6, name="d1"),
            L.LayerNormalization(axis=axis, name="norm"),
            L.Dense(2, name="d2"),
        ]
    )
    with pytest.raises(ValueError, match=r"'norm'.*normalizes axis.*ignore=\['norm'\]"):
        dependency_groups(model)
    assert not _by_producers(model, ignore=["norm"])[("d1",)].prunable


def test_merge_with_a_model_input_keeps_the_group_whole():
    inputs = keras.Input((5,))
    x = L.Dense(5, name="d")(inputs)
    outputs = L.Dense(2, name="o")(L.Add()([inputs, x]))
    group = _by_producers(keras.Model(inputs, outputs))[("d",)]
    assert not group.prunable and group.reason == "model input"


def test_unsupported_layer_names_itself_and_ignore_skips_it():
    model = keras.Sequential(
        [
            keras.Input((6, 4)),
            L.Dense(8, name="d1"),
            L.LSTM(3, name="rnn"),
            L.Dense(2, name="d2"),
        ]
    )
    with pytest.raises(ValueError, match=r"'rnn' of class LSTM.*ignore=\['rnn'\]"):
        dependency_groups(model)
    groups = _by_producers(model, ignore=["rnn"])
    assert not groups[("d1",)].prunable
    assert groups[("d1",)].reason == "ignored layer 'rnn'"
    assert _by_producers(model, ignore=[L.LSTM]).keys() == groups.keys()


def test_ignore_names_must_be_layers_of_the_model_and_may_be_nested_models():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, name="i1"), L.Dense(6, name="i2")],
        name="inner",
    )
    inputs = keras.Input((4,))
    x = L.Dense(6, name="d1")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="d2")(inner(x)))
    with pytest.raises(
        ValueError, match=r"`ignore` names layers .* not have .*\['dd1'\]"
    ):
        dependency_groups(model, ignore=["dd1"])
    assert _by_producers(model)[("i1",)].prunable
    groups = _by_producers(model, ignore=["inner"])
    assert ("i1",) not in groups  # traced as one ignored layer
    assert groups[("d1",)].reason == "ignored layer 'inner'"
    assert _by_producers(model, ignore=["inner", "i1"]).keys() == groups.keys()


def test_ignored_layer_is_never_cut():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="d1"), L.Dense(5, name="d2"), L.Dense(2)]
    )
    groups = _by_producers(model, ignore=["d2"])
    assert not groups[("d1",)].prunable


def test_bad_ignore_and_models_raise_clear_errors():
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(TypeError, match="ignore"):
        dependency_groups(model, ignore=[3])
    with pytest.raises(TypeError, match="ignore"):
        dependency_groups(model, ignore=7)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        dependency_groups(Sub())
    with pytest.raises(ValueError, match="input shape"):
        dependency_groups(keras.Sequential([L.Dense(2)]))


def test_channels_first_is_refused():
    model = keras.Sequential(
        [keras.Input((3, 8, 8)), L.Conv2D(4, 3, data_format="channels_first")]
    )
    with pytest.raises(ValueError, match="channels_last"):
        dependency_groups(model)


def test_member_is_a_plain_record():
    member = Member("d", "kernel", 0, "in")
    assert member.layer == "d" and member.axis == 0


def test_a_layer_with_lora_enabled_raises_naming_it():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="d1"), L.Dense(2, name="d2")]
    )
    model.get_layer("d1").enable_lora(2)
    with pytest.raises(ValueError, match=r"'d1' of class Dense, because it has LoRA"):
        dependency_groups(model)
    assert not any(g.prunable for g in dependency_groups(model, ignore=["d1"]))
