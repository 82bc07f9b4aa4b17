"""Pruning schedules: when masks update, to which sparsity, and validation.

Ports the scenarios of TFMOT's `pruning_schedule_test.py` to our API, plus
property tests. Where we deliberately differ from TFMOT (pruning at
`end_step` even when it is off the frequency grid), the tests say so.
"""

import itertools
import json
import math

import keras
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keras_pruning.masks import num_kept
from keras_pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

pytestmark = pytest.mark.backends

PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, derandomize=True, database=None
)

sparsities = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)
begin_steps = st.integers(min_value=0, max_value=1000)
durations = st.integers(min_value=1, max_value=1000)
frequencies = st.integers(min_value=1, max_value=200)
powers = st.sampled_from([0.5, 1, 2, 3, 5])


def _make(schedule_type, begin_step, end_step, frequency=10):
    """A schedule of either type, with fixed sparsities (as TFMOT's helper)."""
    if schedule_type == "constant":
        return ConstantSparsity(0.5, begin_step, end_step, frequency)
    return PolynomialDecay(0.2, 0.8, begin_step, end_step, 3, frequency)


SCHEDULE_TYPES = ["constant", "polynomial"]


# --- should_prune: begin, end and frequency -----------------------------------


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, False),
        (90, False),
        (99, False),
        (100, True),
        (101, True),
        (110, True),
        (199, True),
        (200, True),
        (201, False),
        (210, False),
        (10_000, False),
    ],
)
def test_prunes_only_in_begin_end_range(schedule_type, step, expected):
    schedule = _make(schedule_type, 100, 200, frequency=1)
    assert schedule(step)[0] is expected


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (99, False),
        (100, True),
        (101, False),
        (109, False),
        (110, True),
        (111, False),
        (150, True),
        (190, True),
        (195, False),
        (200, True),
        (210, False),
    ],
)
def test_prunes_only_at_multiples_of_frequency(schedule_type, step, expected):
    schedule = _make(schedule_type, 100, 200, frequency=10)
    assert schedule(step)[0] is expected


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, True),
        (1, False),
        (99, False),
        (100, True),
        (101, False),
        (149, False),
        # Deliberate difference from TFMOT: (150 - 0) % 100 != 0, yet we
        # prune at end_step so that the final sparsity is reached.
        (150, True),
        (151, False),
        (200, False),
        (300, False),
    ],
)
def test_also_prunes_at_end_step_off_the_frequency_grid(schedule_type, step, expected):
    schedule = _make(schedule_type, 0, 150, frequency=100)
    assert schedule(step)[0] is expected


def test_polynomial_decay_reaches_final_sparsity_off_the_frequency_grid():
    # TFMOT's last update here is at step 100, at sparsity ~0.481; ours is at
    # step 150, at the final sparsity.
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=150, frequency=100)
    update_steps = [step for step in range(0, 400) if schedule(step)[0]]
    assert update_steps == [0, 100, 150]
    assert schedule(100)[1] == pytest.approx(0.5 - 0.5 * (1 - 100 / 150) ** 3)
    assert schedule(100)[1] == pytest.approx(0.48148, abs=1e-5)
    assert schedule(150) == (True, 0.5)


def test_constant_sparsity_prunes_at_end_step_off_the_frequency_grid():
    schedule = ConstantSparsity(0.5, begin_step=10, end_step=45, frequency=10)
    update_steps = [step for step in range(0, 100) if schedule(step)[0]]
    assert update_steps == [10, 20, 30, 40, 45]


def test_end_step_on_the_frequency_grid_is_not_duplicated():
    schedule = ConstantSparsity(0.5, begin_step=10, end_step=40, frequency=10)
    update_steps = [step for step in range(0, 100) if schedule(step)[0]]
    assert update_steps == [10, 20, 30, 40]


def test_constant_sparsity_with_end_step_equal_to_begin_step_prunes_once():
    schedule = ConstantSparsity(0.3, begin_step=7, end_step=7, frequency=5)
    update_steps = [step for step in range(0, 50) if schedule(step)[0]]
    assert update_steps == [7]


def test_constant_sparsity_prunes_forever_when_end_step_is_minus_one():
    schedule = ConstantSparsity(0.5, begin_step=0, end_step=-1, frequency=10)
    assert schedule(10_000) == (True, 0.5)
    assert schedule(100_000_000) == (True, 0.5)
    assert schedule(10**15) == (True, 0.5)
    assert schedule(10_005) == (False, 0.5)


def test_constant_sparsity_defaults():
    schedule = ConstantSparsity(0.5)
    assert schedule.get_config() == {
        "target_sparsity": 0.5,
        "begin_step": 0,
        "end_step": -1,
        "frequency": 100,
    }
    assert [step for step in range(0, 401) if schedule(step)[0]] == [
        0,
        100,
        200,
        300,
        400,
    ]


def test_polynomial_decay_defaults():
    schedule = PolynomialDecay(0.1, 0.9, begin_step=0, end_step=1000)
    assert schedule.power == 3
    assert schedule.frequency == 100


# --- sparsity values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "should_prune", "sparsity"),
    [
        # Values computed by hand from
        # s = final + (initial - final) * (1 - (step - begin) / (end - begin))**3
        (100, True, 0.2),
        (101, False, 0.8 - 0.6 * 0.9**3),  # 0.3626
        (102, True, 0.4928),  # 0.8 - 0.6 * 0.8**3
        (105, False, 0.725),  # 0.8 - 0.6 * 0.5**3
        (108, True, 0.7952),  # 0.8 - 0.6 * 0.2**3
        (110, True, 0.8),
    ],
)
def test_polynomial_decay_table(step, should_prune, sparsity):
    schedule = PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    prune, value = schedule(step)
    assert prune is should_prune
    assert value == pytest.approx(sparsity, abs=1e-9)
    assert schedule.sparsity(step) == value


@pytest.mark.parametrize(
    ("power", "step", "sparsity"),
    [
        (1, 5, 0.45),  # linear: halfway to 0.9
        (1, 8, 0.72),
        (2, 5, 0.675),  # 0.9 * (1 - 0.5**2)
        (0.5, 4, 0.9 * (1 - math.sqrt(0.6))),
    ],
)
def test_polynomial_decay_other_powers(power, step, sparsity):
    schedule = PolynomialDecay(0.0, 0.9, 0, 10, power, 1)
    assert schedule(step)[1] == pytest.approx(sparsity, abs=1e-12)


def test_polynomial_decay_can_decrease_sparsity():
    schedule = PolynomialDecay(0.8, 0.2, 0, 10, 1, 1)
    assert schedule(5)[1] == pytest.approx(0.5)
    assert schedule(10)[1] == pytest.approx(0.2)


@pytest.mark.parametrize("step", [0, 50, 99])
def test_polynomial_decay_before_begin_step_is_initial_and_does_not_prune(step):
    schedule = PolynomialDecay(0.25, 0.75, 100, 200, 3, 10)
    assert schedule(step) == (False, 0.25)


@pytest.mark.parametrize("step", [200, 201, 250, 10**9])
def test_polynomial_decay_at_and_after_end_step_is_final(step):
    schedule = PolynomialDecay(0.25, 0.75, 100, 200, 3, 10)
    assert schedule(step)[1] == 0.75
    assert schedule(step)[0] is (step == 200)


@pytest.mark.parametrize(
    ("initial", "final"),
    [(0.2, 0.8), (0.1, 0.43), (0.1, 0.7), (0.5, 0.9), (0.0, 0.5)],
)
def test_polynomial_decay_is_exactly_initial_at_begin_step(initial, final):
    schedule = PolynomialDecay(initial, final, 100, 110, 3, 2)
    assert schedule(100) == (True, initial)


def test_polynomial_decay_at_begin_step_keeps_as_many_weights_as_initial_sparsity():
    # 15 weights at sparsity 0.1: 13.5 kept rounds (half to even) to 14.
    schedule = PolynomialDecay(0.1, 0.43, 0, 10, 3, 1)
    assert num_kept(15, 0.1) == 14
    assert num_kept(15, schedule(0)[1]) == 14


@pytest.mark.parametrize("step", [0, 10, 100, 101, 10**6])
def test_constant_sparsity_value_is_the_target_at_every_step(step):
    schedule = ConstantSparsity(0.7, begin_step=100, end_step=200, frequency=10)
    assert schedule(step)[1] == 0.7
    assert schedule.sparsity(step) == 0.7


def test_step_accepts_numpy_integers():
    schedule = PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    assert schedule(np.int64(102)) == schedule(102)
    assert schedule(np.int32(110)) == (True, 0.8)


@pytest.mark.parametrize("step", ["ten", None, object()])
def test_non_numeric_step_raises(step):
    schedule = ConstantSparsity(0.5)
    with pytest.raises(TypeError, match=r"`step` must be an integer.*Received"):
        schedule(step)


def test_pruning_schedule_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        PruningSchedule()


# --- validation -----------------------------------------------------------------


def _constant(**overrides):
    kwargs = {"target_sparsity": 0.5, "begin_step": 10, "end_step": 1000}
    kwargs["frequency"] = 10
    kwargs.update(overrides)
    return ConstantSparsity(**kwargs)


def _polynomial(**overrides):
    kwargs = {"initial_sparsity": 0.2, "final_sparsity": 0.8}
    kwargs.update(begin_step=10, end_step=1000, power=3, frequency=10)
    kwargs.update(overrides)
    return PolynomialDecay(**kwargs)


FACTORIES = {"constant": _constant, "polynomial": _polynomial}
SPARSITY_ARGS = [
    ("constant", "target_sparsity"),
    ("polynomial", "initial_sparsity"),
    ("polynomial", "final_sparsity"),
]


@pytest.mark.parametrize(("schedule_type", "name"), SPARSITY_ARGS)
@pytest.mark.parametrize(
    "value",
    [-0.001, -1.0, -10.0, 1.0, 1, 1.5, 10.0, float("nan"), float("inf"), -math.inf],
)
def test_sparsity_out_of_range_raises_value_error(schedule_type, name, value):
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}="):
        FACTORIES[schedule_type](**{name: value})


@pytest.mark.parametrize(("schedule_type", "name"), SPARSITY_ARGS)
@pytest.mark.parametrize("value", ["0.5", None, [0.5], True, False, 0.5j])
def test_sparsity_of_wrong_type_raises_type_error(schedule_type, name, value):
    with pytest.raises(TypeError, match=rf"`{name}`.*Received: {name}="):
        FACTORIES[schedule_type](**{name: value})


@pytest.mark.parametrize(("schedule_type", "name"), SPARSITY_ARGS)
@pytest.mark.parametrize("value", [0.0, 0, 0.001, 0.5, 0.99, 0.999999])
def test_sparsity_in_range_is_accepted(schedule_type, name, value):
    schedule = FACTORIES[schedule_type](**{name: value})
    assert getattr(schedule, name) == value
    assert isinstance(getattr(schedule, name), float)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("value", [-1, -5])
def test_negative_begin_step_raises(schedule_type, value):
    with pytest.raises(ValueError, match=r"`begin_step`.*Received: begin_step="):
        FACTORIES[schedule_type](begin_step=value)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("begin_step", [0, 1, 100])
def test_non_negative_begin_step_is_accepted(schedule_type, begin_step):
    assert FACTORIES[schedule_type](begin_step=begin_step).begin_step == begin_step


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
def test_end_step_below_begin_step_raises(schedule_type):
    with pytest.raises(ValueError, match=r"`end_step`.*Received: end_step=5"):
        FACTORIES[schedule_type](begin_step=10, end_step=5)


@pytest.mark.parametrize("end_step", [-5, -2])
def test_constant_sparsity_end_step_below_minus_one_raises(end_step):
    with pytest.raises(ValueError, match=r"`end_step`.*Received: end_step="):
        _constant(begin_step=0, end_step=end_step)


@pytest.mark.parametrize("end_step", [-1, -5])
def test_polynomial_decay_negative_end_step_raises(end_step):
    with pytest.raises(ValueError, match=r"`end_step`.*Received: end_step="):
        _polynomial(begin_step=0, end_step=end_step)


@pytest.mark.parametrize("step", [0, 10])
def test_polynomial_decay_end_step_equal_to_begin_step_raises(step):
    with pytest.raises(ValueError, match=r"`end_step`.*Received: end_step="):
        _polynomial(begin_step=step, end_step=step)


@pytest.mark.parametrize(("begin_step", "end_step"), [(0, 0), (10, 10), (10, 20)])
def test_constant_sparsity_end_step_at_or_after_begin_step_is_accepted(
    begin_step, end_step
):
    schedule = _constant(begin_step=begin_step, end_step=end_step)
    assert (schedule.begin_step, schedule.end_step) == (begin_step, end_step)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("value", [0, -1, -5])
def test_non_positive_frequency_raises(schedule_type, value):
    with pytest.raises(ValueError, match=r"`frequency`.*Received: frequency="):
        FACTORIES[schedule_type](frequency=value)


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("value", [1, 10])
def test_positive_frequency_is_accepted(schedule_type, value):
    assert FACTORIES[schedule_type](frequency=value).frequency == value


@pytest.mark.parametrize("schedule_type", SCHEDULE_TYPES)
@pytest.mark.parametrize("name", ["begin_step", "end_step", "frequency"])
@pytest.mark.parametrize("value", [10.0, "10", None, True, False, np.float64(10.0)])
def test_step_arguments_of_wrong_type_raise_type_error(schedule_type, name, value):
    with pytest.raises(TypeError, match=rf"`{name}`.*Received: {name}="):
        FACTORIES[schedule_type](**{name: value})


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), -math.inf])
def test_non_positive_power_raises(value):
    with pytest.raises(ValueError, match=r"`power`.*Received: power="):
        _polynomial(power=value)


@pytest.mark.parametrize("value", ["3", None, True, [3]])
def test_power_of_wrong_type_raises_type_error(value):
    with pytest.raises(TypeError, match=r"`power`.*Received: power="):
        _polynomial(power=value)


@pytest.mark.parametrize("value", [0.1, 1, 2.5, 3])
def test_positive_power_is_accepted(value):
    assert _polynomial(power=value).power == value


# --- config, serialization, equality --------------------------------------------

SCHEDULES = [
    ConstantSparsity(0.7, 10, 20, 10),
    ConstantSparsity(0.0),
    ConstantSparsity(0.5, begin_step=3, end_step=-1, frequency=1),
    PolynomialDecay(0.2, 0.6, 10, 20, 5, 10),
    PolynomialDecay(0.0, 0.9, 0, 1000, power=0.5, frequency=1),
]


def test_get_config_lists_constructor_arguments():
    assert ConstantSparsity(0.7, 10, 20, 5).get_config() == {
        "target_sparsity": 0.7,
        "begin_step": 10,
        "end_step": 20,
        "frequency": 5,
    }
    assert PolynomialDecay(0.2, 0.6, 10, 20, 5, 10).get_config() == {
        "initial_sparsity": 0.2,
        "final_sparsity": 0.6,
        "begin_step": 10,
        "end_step": 20,
        "power": 5,
        "frequency": 10,
    }


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_config_round_trip(schedule):
    config = schedule.get_config()
    json.dumps(config)  # must be JSON-serializable as is
    restored = type(schedule).from_config(config)
    assert type(restored) is type(schedule)
    assert restored == schedule
    assert restored.get_config() == config
    assert vars(restored) == vars(schedule)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_keras_serialization_round_trip_without_custom_objects(schedule):
    serialized = keras.saving.serialize_keras_object(schedule)
    serialized = json.loads(json.dumps(serialized))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(schedule)
    assert restored == schedule
    assert [restored(step) for step in range(0, 60)] == [
        schedule(step) for step in range(0, 60)
    ]


@pytest.mark.parametrize("cls", [ConstantSparsity, PolynomialDecay])
def test_classes_are_registered_under_keras_pruning(cls):
    name = f"keras_pruning>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


def test_equality_and_hash():
    a = PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    b = PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != PolynomialDecay(0.2, 0.8, 100, 110, 3, 3)
    assert a != PolynomialDecay(0.2, 0.8, 100, 111, 3, 2)
    assert a != PolynomialDecay(0.2, 0.7, 100, 110, 3, 2)
    assert ConstantSparsity(0.5) == ConstantSparsity(0.5, 0, -1, 100)
    assert ConstantSparsity(0) == ConstantSparsity(0.0)
    assert ConstantSparsity(0.5) != ConstantSparsity(0.5, frequency=10)
    assert ConstantSparsity(0.5) != ConstantSparsity(0.6)
    assert ConstantSparsity(0.5, 0, 10, 1) != PolynomialDecay(0.5, 0.5, 0, 10, 3, 1)
    assert ConstantSparsity(0.5) != "ConstantSparsity(0.5)"
    assert ConstantSparsity(0.5) != 0.5


def test_repr_shows_the_config():
    assert repr(ConstantSparsity(0.5, 1, 9, 2)) == (
        "ConstantSparsity(target_sparsity=0.5, begin_step=1, end_step=9, frequency=2)"
    )


# --- properties -----------------------------------------------------------------


@st.composite
def polynomial_decays(draw):
    begin = draw(begin_steps)
    return PolynomialDecay(
        draw(sparsities),
        draw(sparsities),
        begin,
        begin + draw(durations),
        draw(powers),
        draw(frequencies),
    )


@PROPERTY_SETTINGS
@given(polynomial_decays(), st.integers(min_value=0, max_value=3000))
@example(PolynomialDecay(0.2, 0.8, 100, 110, 3, 2), 105)
def test_polynomial_decay_stays_between_initial_and_final(schedule, step):
    low = min(schedule.initial_sparsity, schedule.final_sparsity)
    high = max(schedule.initial_sparsity, schedule.final_sparsity)
    steps = [0, step, schedule.begin_step, schedule.end_step, schedule.end_step + 7]
    steps += range(schedule.begin_step, schedule.end_step + 1, 7)
    for s in steps:
        assert low <= schedule(s)[1] <= high, s


@PROPERTY_SETTINGS
@given(polynomial_decays())
def test_polynomial_decay_is_monotone_towards_final(schedule):
    direction = 1 if schedule.final_sparsity >= schedule.initial_sparsity else -1
    stride = max(1, (schedule.end_step - schedule.begin_step) // 50)
    steps = list(range(0, schedule.end_step + 20, stride)) + [schedule.end_step]
    values = [direction * schedule(step)[1] for step in sorted(steps)]
    assert all(a <= b for a, b in itertools.pairwise(values))


@PROPERTY_SETTINGS
@given(polynomial_decays(), st.integers(min_value=0, max_value=10**6))
@example(PolynomialDecay(0.2, 0.8, 100, 110, 3, 2), 0)
def test_polynomial_decay_endpoints(schedule, offset):
    assert schedule(schedule.begin_step) == (True, schedule.initial_sparsity)
    assert schedule(schedule.end_step) == (True, schedule.final_sparsity)
    assert schedule(schedule.end_step + offset)[1] == schedule.final_sparsity
    assert schedule.sparsity(max(schedule.begin_step - 1 - offset, 0)) == (
        schedule.sparsity(schedule.begin_step)
    )


@PROPERTY_SETTINGS
@given(
    begin_steps,
    st.one_of(st.just(-1), durations),
    frequencies,
    st.integers(min_value=0, max_value=3000),
)
def test_constant_sparsity_should_prune_rule(begin, duration, frequency, step):
    end = -1 if duration == -1 else begin + duration
    schedule = ConstantSparsity(0.25, begin, end, frequency)
    in_range = begin <= step and (end == -1 or step <= end)
    on_grid = (step - begin) % frequency == 0 or step == end
    assert schedule(step) == (in_range and on_grid, 0.25)
    if end != -1:
        assert schedule(end)[0] is True
        assert schedule(end + 1)[0] is False
    assert schedule(begin)[0] is True
    if begin > 0:
        assert schedule(begin - 1)[0] is False


@PROPERTY_SETTINGS
@given(polynomial_decays(), st.integers(min_value=0, max_value=3000))
def test_polynomial_decay_should_prune_rule(schedule, step):
    begin, end, frequency = schedule.begin_step, schedule.end_step, schedule.frequency
    in_range = begin <= step <= end
    on_grid = (step - begin) % frequency == 0 or step == end
    assert schedule(step)[0] is (in_range and on_grid)
    assert schedule(end)[0] is True
    assert schedule(end + 1)[0] is False


def test_numpy_scalars_are_accepted_as_arguments_and_steps():
    schedule = PolynomialDecay(
        np.float32(0.25),
        np.float64(0.75),
        np.int64(0),
        np.int32(10),
        frequency=np.int64(5),
    )
    assert schedule.get_config()["begin_step"] == 0
    assert type(PolynomialDecay(0.0, 0.5, 0, 10, power=np.float32(2)).power) is float
    assert isinstance(schedule.get_config()["end_step"], int)
    assert schedule(np.int64(10)) == (True, 0.75)
    assert ConstantSparsity(np.float32(0.5), 0)(np.int32(100)) == (True, 0.5)


@pytest.mark.parametrize("step", [5.7, 5.0, True, "5", None])
def test_non_integer_steps_are_rejected(step):
    with pytest.raises(TypeError, match="step.*Received"):
        ConstantSparsity(0.5, 0, frequency=1)(step)
