"""Argument validation of the public API, fuzzed with hypothesis.

Each case is a public function, one of its arguments, a valid call, and a
strategy of bad values for that argument. Hypothesis draws bad values
(wrong types, NaN, infinities, negatives, huge numbers, strings, None where it
is not allowed, tuples of the wrong length...) into the valid call; the call
must raise ValueError or TypeError (or FileExistsError for `overwrite`) with a
message that names the argument, never another exception.

The total number of examples is `len(CASES) * EXAMPLES_PER_CASE` (hypothesis
stops early for a case whose strategy has fewer distinct values);
docs/guides/reliability.md reports it.
"""

import dataclasses
import functools
import pathlib
import re

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_pruning as kp
from keras_pruning import allocation, analysis, datasets, export, lottery, structured

EXAMPLES_PER_CASE = 40
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_CASE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)

# --- bad values ---------------------------------------------------------------

junk = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.builds(object),
    st.complex_numbers(max_magnitude=10, allow_nan=False),
)
junk_but_none = junk.filter(lambda v: v is not None)
any_float = st.floats(allow_nan=True, allow_infinity=True)
any_int = st.integers(-(10**20), 10**20)


def bad_fraction(allow_none=False):
    """Anything but a real number in [0, 1)."""
    return st.one_of(
        junk_but_none if allow_none else junk,
        st.booleans(),
        any_float.filter(lambda v: not 0.0 <= v < 1.0),
        any_int.filter(lambda v: v != 0),
    )


def bad_int(minimum, allow_none=False):
    """Anything but an integer >= `minimum`."""
    return st.one_of(
        junk_but_none if allow_none else junk,
        st.booleans(),
        any_float,
        st.integers(-(10**20), minimum - 1),
    )


def bad_choice(*allowed, allow_none=False):
    return st.one_of(
        junk_but_none if allow_none else junk,
        st.booleans(),
        any_int,
        st.text(max_size=8).filter(lambda v: v not in allowed),
    )


bad_bool = st.one_of(junk, any_int, any_float, st.text(max_size=4))


def bad_pair(allow_none=False, strict=False):
    """Anything but `(a, b)` of positive ints (with `a < b` if `strict`)."""

    def good(v):
        if not (isinstance(v, (tuple, list)) and len(v) == 2):
            return False
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            return False
        return 1 <= v[0] < v[1] if strict else min(v) >= 1

    return st.one_of(
        (junk_but_none if allow_none else junk).filter(lambda v: not good(v)),
        st.tuples(any_int, any_int).filter(lambda v: not good(v)),
        st.lists(st.integers(1, 4), max_size=4)
        .map(tuple)
        .filter(lambda v: not good(v)),
        st.tuples(any_float, any_float),
        any_int,
    )


bad_model = st.one_of(junk, st.just(np.zeros((2, 3))), st.integers())
bad_path = st.one_of(
    st.just(""),
    any_int,
    any_float,
    st.lists(st.text(max_size=3), max_size=2),
    st.builds(object),
    st.binary(max_size=4),
)
bad_array = st.one_of(junk_but_none, any_int, any_float, st.just(np.zeros(0)))
bad_tflite = st.one_of(junk, st.binary(max_size=64), st.text(max_size=8))
bad_layers = st.one_of(
    st.integers(),
    any_float,
    st.builds(object),
    st.lists(st.integers(), min_size=1, max_size=2),
    st.text(min_size=1, max_size=6).map(lambda s: "no such layer " + s),
)


def _good_bounds(v):
    return (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(isinstance(i, (int, float)) and not isinstance(i, bool) for i in v)
        and 0.0 <= v[0] <= v[1] < 1.0
    )


bad_bounds = st.one_of(
    junk_but_none.filter(lambda v: not isinstance(v, dict) and not _good_bounds(v)),
    any_float,
    st.tuples(any_float, any_float).filter(lambda v: not _good_bounds(v)),
    st.tuples(st.booleans(), st.floats(0.0, 0.5)),
)
bad_callable = st.one_of(junk_but_none, any_int, st.text(max_size=4))

# --- valid calls ----------------------------------------------------------------


@functools.cache
def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(4, name="logits"),
        ],
        name="mlp",
    )


@functools.cache
def _pruned():
    return kp.prune_low_magnitude(_mlp(), kp.ConstantSparsity(0.5, 0, frequency=1))


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    return rng.random((16, 8)).astype("float32"), rng.integers(0, 4, 16)


@functools.cache
def _tflite():
    return export.to_tflite(_mlp())


def _train(model, callbacks):
    x, y = _data()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, callbacks=callbacks, verbose=0)


def _weights():
    return np.random.default_rng(0).normal(size=(8, 6)).astype("float32")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    function: object
    argument: str
    valid: object  # () -> kwargs of a valid call
    bad: object  # strategy of bad values for `argument`

    def __str__(self):
        return f"{self.name}:{self.argument}"


def _schedule_step(schedule):
    return lambda step: schedule(step)


def _table_plan(max_drop):
    table = analysis.SensitivityTable(0.9, (0.5,), {"hidden": [0.8]}, "accuracy")
    return table.plan(max_drop)


def _update_masks(model, sparsity):
    return lottery.update_masks(model, sparsity)


def _cases(tmp):
    def polynomial(**kw):
        return dict(initial_sparsity=0.1, final_sparsity=0.8, begin_step=0,
                    end_step=100, power=3, frequency=10) | kw  # fmt: skip

    constant = dict(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)
    mask = dict(weights=_weights(), sparsity=0.5)
    block = dict(weights=_weights(), sparsity=0.5, block_size=(2, 2), pooling="avg")
    m_by_n = dict(weights=_weights(), m=2, n=4, axis=-2)
    wrapper = dict(layer=keras.layers.Dense(4))
    prune = dict(to_prune=_mlp(), pruning_schedule=kp.ConstantSparsity(0.5, 0))
    oneshot = dict(model=_mlp(), sparsity=0.5)
    sens = dict(model=_mlp(), data=_data(), sparsities=(0.5,), verbose=0)
    channels = dict(model=_mlp(), sparsity=0.5)
    convert = dict(model=_mlp())
    int8 = dict(model=_mlp(), quantize="int8", representative_data=_data()[0])
    return [
        Case("ConstantSparsity", kp.ConstantSparsity, "target_sparsity",
             lambda: constant, bad_fraction()),
        Case("ConstantSparsity", kp.ConstantSparsity, "begin_step",
             lambda: constant, bad_int(0)),
        Case("ConstantSparsity", kp.ConstantSparsity, "end_step",
             lambda: constant, bad_int(-1).filter(lambda v: v != -1)),
        Case("ConstantSparsity", kp.ConstantSparsity, "frequency",
             lambda: constant, bad_int(1)),
        Case("PolynomialDecay", kp.PolynomialDecay, "initial_sparsity",
             polynomial, bad_fraction()),
        Case("PolynomialDecay", kp.PolynomialDecay, "final_sparsity",
             polynomial, bad_fraction()),
        Case("PolynomialDecay", kp.PolynomialDecay, "begin_step",
             polynomial, st.one_of(bad_int(0), st.integers(100, 10**20))),
        Case("PolynomialDecay", kp.PolynomialDecay, "end_step",
             polynomial, bad_int(1)),
        Case("PolynomialDecay", kp.PolynomialDecay, "power",
             polynomial, st.one_of(junk, st.booleans(), any_float.filter(
                 lambda v: not 0 < v < float("inf")), st.integers(-(10**20), 0))),
        Case("PolynomialDecay", kp.PolynomialDecay, "frequency",
             polynomial, bad_int(1)),
        Case("PruningSchedule.__call__", _schedule_step(kp.ConstantSparsity(0.5)),
             "step", lambda: {"step": 1}, st.one_of(junk, any_float, st.booleans())),
        Case("magnitude_mask", kp.magnitude_mask, "weights", lambda: mask,
             st.one_of(junk, st.just(np.array(["a", "b"])))),
        Case("magnitude_mask", kp.magnitude_mask, "sparsity", lambda: mask,
             bad_fraction()),
        Case("block_magnitude_mask", kp.block_magnitude_mask, "sparsity",
             lambda: block, bad_fraction()),
        Case("block_magnitude_mask", kp.block_magnitude_mask, "block_size",
             lambda: block, bad_pair()),
        Case("block_magnitude_mask", kp.block_magnitude_mask, "pooling",
             lambda: block, bad_choice("avg", "max")),
        Case("global_magnitude_masks", kp.global_magnitude_masks, "weights",
             lambda: block | {"weights": [_weights()]}, st.one_of(junk, st.just([]), st.just([None]))),
        Case("global_magnitude_masks", kp.global_magnitude_masks, "sparsity",
             lambda: block | {"weights": [_weights()]}, bad_fraction()),
        Case("global_magnitude_masks", kp.global_magnitude_masks, "block_size",
             lambda: block | {"weights": [_weights()]}, bad_pair()),
        Case("m_by_n_mask", kp.m_by_n_mask, "m", lambda: m_by_n,
             st.one_of(bad_int(1), st.integers(4, 10**20))),
        Case("m_by_n_mask", kp.m_by_n_mask, "n", lambda: m_by_n,
             st.one_of(junk, any_float, st.booleans(), st.integers(-(10**20), 2))),
        Case("m_by_n_mask", kp.m_by_n_mask, "axis", lambda: m_by_n,
             st.one_of(junk, any_float, st.integers(2, 10**20),
                       st.integers(-(10**20), -3))),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "layer", lambda: wrapper,
             st.one_of(junk, st.just(_mlp()))),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "pruning_schedule",
             lambda: wrapper, junk_but_none),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "block_size",
             lambda: wrapper, bad_pair()),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "block_pooling_type",
             lambda: wrapper,
             bad_choice().filter(lambda v: str(v).lower() not in ("avg", "max"))),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "sparsity_m_by_n",
             lambda: wrapper, bad_pair(allow_none=True, strict=True)),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "granularity",
             lambda: wrapper, bad_choice("weight", "channel")),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "channel_sides",
             lambda: wrapper | {"granularity": "channel"},
             st.one_of(junk, st.just(()), st.just(("up",)))),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "to_prune",
             lambda: prune, st.one_of(junk, st.just([]), st.just(np.zeros(3)))),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "pruning_schedule",
             lambda: prune, junk_but_none.filter(lambda v: not isinstance(v, dict))),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "block_size",
             lambda: prune, bad_pair()),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "sparsity_m_by_n",
             lambda: prune, bad_pair(allow_none=True, strict=True)),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "pruning_policy",
             lambda: prune, junk_but_none),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "layers",
             lambda: prune, bad_layers),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "granularity",
             lambda: prune, bad_choice("weight", "channel")),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "criterion",
             lambda: prune, bad_choice("magnitude", "taylor").filter(
                 lambda v: not callable(v))),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "global_pruning",
             lambda: prune, bad_bool),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "allocation",
             lambda: prune | {"global_pruning": True}, bad_choice("magnitude", "erk")),
        Case("prune_low_magnitude", kp.prune_low_magnitude, "sparsity_bounds",
             lambda: prune | {"global_pruning": True},
             st.one_of(bad_bounds, st.dictionaries(
                 st.just("hidden"), bad_bounds, min_size=1))),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "criterion",
             lambda: wrapper, bad_choice("magnitude", "taylor").filter(
                 lambda v: not callable(v))),
        Case("PruneLowMagnitude", kp.PruneLowMagnitude, "sparsity_bounds",
             lambda: wrapper | {"global_pruning": True}, bad_bounds),
        Case("erk_sparsities", allocation.erk_sparsities, "shapes",
             lambda: {"shapes": [(3, 4)], "sparsity": 0.5},
             st.one_of(junk, st.just([]), st.just([(0, 4)]), st.just([()]),
                       st.lists(st.tuples(any_float), min_size=1, max_size=2))),
        Case("erk_sparsities", allocation.erk_sparsities, "sparsity",
             lambda: {"shapes": [(3, 4)], "sparsity": 0.5}, bad_fraction()),
        Case("erk_sparsities", allocation.erk_sparsities, "bounds",
             lambda: {"shapes": [(3, 4)], "sparsity": 0.5},
             st.one_of(junk_but_none, st.just([]), st.lists(bad_bounds, min_size=1,
                                                          max_size=1))),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "model", lambda: oneshot,
             bad_model),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "sparsity", lambda: oneshot,
             bad_fraction(allow_none=True)),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "global_pruning",
             lambda: oneshot, bad_bool),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "block_size",
             lambda: oneshot, bad_pair()),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "block_pooling_type",
             lambda: oneshot,
             bad_choice().filter(lambda v: str(v).lower() not in ("avg", "max"))),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "layers", lambda: oneshot,
             bad_layers),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "allocation",
             lambda: oneshot | {"global_pruning": True},
             bad_choice("magnitude", "erk")),
        Case("prune_to_sparsity", kp.prune_to_sparsity, "sparsity_bounds",
             lambda: oneshot | {"global_pruning": True}, bad_bounds),
        Case("strip_pruning", kp.strip_pruning, "model", lambda: {"model": _pruned()},
             bad_model),
        Case("strip_pruning", kp.strip_pruning, "shrink", lambda: {"model": _pruned()},
             bad_bool),
        Case("pruning_wrappers", kp.pruning_wrappers, "model",
             lambda: {"model": _pruned()}, bad_model),
        Case("sparsity_report", kp.sparsity_report, "model",
             lambda: {"model": _pruned()}, bad_model),
        Case("model_cost", kp.model_cost, "model", lambda: {"model": _mlp()},
             bad_model),
        Case("compare_cost", kp.compare_cost, "after",
             lambda: {"before": _mlp(), "after": _mlp()}, bad_model),
        Case("pad_for_xnnpack", kp.pad_for_xnnpack, "model",
             lambda: {"model": _mlp()}, bad_model),
        Case("get_prunable_weights", kp.get_prunable_weights, "layer",
             lambda: {"layer": _mlp().layers[0]}, bad_model),
        Case("PruningSummaries", kp.PruningSummaries, "log_dir",
             lambda: {"log_dir": str(tmp)}, st.one_of(bad_path, st.none())),
        Case("PruningSummaries", kp.PruningSummaries, "update_freq",
             lambda: {"log_dir": str(tmp)},
             st.one_of(junk, any_float, st.integers(-(10**20), 0),
                       st.text(max_size=6).filter(lambda v: v != "epoch"))),
        Case("sensitivity", analysis.sensitivity, "model", lambda: sens, bad_model),
        Case("sensitivity", analysis.sensitivity, "data", lambda: sens,
             st.one_of(junk, st.tuples(st.just(np.zeros((2, 8))), st.just(np.zeros(3))))),
        Case("sensitivity", analysis.sensitivity, "sparsities", lambda: sens,
             st.one_of(junk.filter(lambda v: not isinstance(v, list)),
                       st.lists(any_float.filter(lambda v: not 0 <= v < 1),
                                      min_size=1, max_size=2))),
        Case("sensitivity", analysis.sensitivity, "metric", lambda: sens,
             bad_choice("accuracy")),
        Case("sensitivity", analysis.sensitivity, "higher_is_better", lambda: sens,
             bad_bool),
        Case("sensitivity", analysis.sensitivity, "batch_size", lambda: sens,
             bad_int(1)),
        Case("sensitivity", analysis.sensitivity, "plot", lambda: sens,
             st.one_of(bad_path, st.just(str(tmp / "plot.jpg")))),
        Case("sensitivity", analysis.sensitivity, "verbose", lambda: sens,
             st.one_of(junk, any_int.filter(lambda v: v not in (0, 1)))),
        Case("sensitivity", analysis.sensitivity, "layers", lambda: sens,
             bad_layers),
        Case("SensitivityTable.plan", _table_plan, "max_drop",
             lambda: {"max_drop": 0.01},
             st.one_of(junk, st.booleans(), any_float.filter(lambda v: not v >= 0))),
        Case("fashion_mnist", datasets.fashion_mnist, "path",
             lambda: {"path": None, "download": False},
             st.one_of(bad_path, st.just(str(tmp / "no-such-folder")))),
        Case("fashion_mnist", datasets.fashion_mnist, "download",
             lambda: {"path": None}, bad_bool),
        Case("round_sparsity", lottery.round_sparsity, "rate",
             lambda: {"rate": 0.2, "round_index": 1},
             st.one_of(junk, st.booleans(), any_float.filter(lambda v: not 0 < v < 1))),
        Case("round_sparsity", lottery.round_sparsity, "round_index",
             lambda: {"rate": 0.2, "round_index": 1}, bad_int(0)),
        Case("RewindCheckpoint", lottery.RewindCheckpoint, "step",
             lambda: {"step": 0}, bad_int(0)),
        Case("prepare", lottery.prepare, "model", lambda: {"model": _mlp()},
             bad_model),
        Case("update_masks", _update_masks, "sparsity",
             lambda: {"model": lottery.prepare(_mlp()), "sparsity": 0.5},
             bad_fraction()),
        Case("rewind", lottery.rewind, "weights",
             lambda: {"model": _pruned(), "weights": lottery.snapshot(_pruned())},
             st.one_of(junk, st.lists(st.just(np.zeros(3)), max_size=3))),
        Case("find_ticket", lottery.find_ticket, "rate",
             lambda: {"model": _mlp(), "train": _train, "rounds": 1, "rate": 0.2},
             st.one_of(junk, any_float.filter(lambda v: not 0 < v < 1))),
        Case("find_ticket", lottery.find_ticket, "rounds",
             lambda: {"model": _mlp(), "train": _train, "rounds": 1, "rate": 0.2},
             bad_int(1)),
        Case("find_ticket", lottery.find_ticket, "train",
             lambda: {"model": _mlp(), "train": _train, "rounds": 1, "rate": 0.2},
             bad_callable),
        Case("dependency_groups", structured.dependency_groups, "model",
             lambda: {"model": _mlp()}, bad_model),
        Case("dependency_groups", structured.dependency_groups, "ignore",
             lambda: {"model": _mlp()}, st.one_of(any_int, any_float, st.builds(object),
                                                  st.lists(st.integers(), min_size=1))),
        Case("prune_channels", structured.prune_channels, "model",
             lambda: channels, bad_model),
        Case("prune_channels", structured.prune_channels, "sparsity",
             lambda: channels, bad_fraction()),
        Case("prune_channels", structured.prune_channels, "importance",
             lambda: channels, bad_choice("l1", "l2", "bn", "taylor")),
        Case("prune_channels", structured.prune_channels, "round_to",
             lambda: channels, bad_int(1)),
        Case("prune_channels", structured.prune_channels, "global_pruning",
             lambda: channels, bad_bool),
        Case("to_tflite", export.to_tflite, "model", lambda: convert, bad_model),
        Case("to_tflite", export.to_tflite, "quantize", lambda: convert,
             bad_choice("dynamic", "float16", "int8", allow_none=True)),
        Case("to_tflite", export.to_tflite, "target", lambda: convert,
             bad_choice("litert", "micro")),
        Case("to_tflite", export.to_tflite, "sparse", lambda: convert, bad_bool),
        Case("to_tflite", export.to_tflite, "path", lambda: convert, bad_path),
        Case("to_tflite", export.to_tflite, "overwrite", lambda: convert, bad_bool),
        Case("to_tflite", export.to_tflite, "representative_data", lambda: int8,
             st.one_of(junk, st.just(np.zeros((4, 3))))),
        Case("model_info", export.model_info, "data", lambda: {"data": _tflite()},
             bad_tflite),
        Case("compress_for_micro", export.compress_for_micro, "tflite_bytes",
             lambda: {"tflite_bytes": _tflite()}, bad_tflite),
        Case("compress_for_micro", export.compress_for_micro, "method",
             lambda: {"tflite_bytes": _tflite()}, bad_choice("prune")),
        Case("compress_for_micro", export.compress_for_micro, "min_saving_bytes",
             lambda: {"tflite_bytes": _tflite()}, bad_int(0)),
        Case("compress_for_micro", export.compress_for_micro, "ram_budget_bytes",
             lambda: {"tflite_bytes": _tflite()}, bad_int(0, allow_none=True)),
        Case("compress_for_micro", export.compress_for_micro, "strip_strings",
             lambda: {"tflite_bytes": _tflite()}, bad_bool),
        Case("min_arena_bytes", export.min_arena_bytes, "tflite_bytes",
             lambda: {"tflite_bytes": _tflite()}, bad_tflite),
        Case("min_arena_bytes", export.min_arena_bytes,
             "alt_decompression_memory_size",
             lambda: {"tflite_bytes": _tflite()}, bad_int(0)),
        Case("run", export.run, "tflite_bytes",
             lambda: {"tflite_bytes": _tflite(), "x": _data()[0]}, bad_tflite),
        Case("run", export.run, "x",
             lambda: {"tflite_bytes": _tflite(), "x": _data()[0]}, bad_array),
        Case("run", export.run, "runtime",
             lambda: {"tflite_bytes": _tflite(), "x": _data()[0]},
             bad_choice("litert", "micro")),
        Case("verify", export.verify, "model",
             lambda: {"tflite_bytes": _tflite(), "model": _mlp(), "x": _data()[0]},
             bad_model),
        Case("verify", export.verify, "y",
             lambda: {"tflite_bytes": _tflite(), "model": _mlp(), "x": _data()[0]},
             st.one_of(junk_but_none, st.just(np.zeros(3)))),
        Case("report", export.report, "model", lambda: {"model": _mlp()},
             st.one_of(bad_model, st.just(str(tmp / "missing.keras")))),
        Case("report", export.report, "x", lambda: {"model": _mlp()},
             bad_array),
        Case("report", export.report, "y",
             lambda: {"model": _mlp(), "x": _data()[0]},
             st.one_of(junk_but_none, st.just(np.zeros(3)))),
        Case("report", export.report, "baseline", lambda: {"model": _mlp()},
             junk_but_none),
        Case("report", export.report, "path", lambda: {"model": _mlp()}, bad_path),
        Case("report", export.report, "overwrite", lambda: {"model": _mlp()},
             bad_bool),
        Case("write_atomic", export.write_atomic, "path",
             lambda: {"path": str(tmp / "a.bin"), "data": b"", "overwrite": True}, bad_path),
        Case("write_atomic", export.write_atomic, "data",
             lambda: {"path": str(tmp / "a.bin"), "data": b"", "overwrite": True},
             st.one_of(st.none(), any_int, st.lists(st.integers()), st.builds(object))),
        Case("write_atomic", export.write_atomic, "overwrite",
             lambda: {"path": str(tmp / "a.bin"), "data": b"", "overwrite": True}, bad_bool),
        Case("write_c_source", export.write_c_source, "name",
             lambda: {"tflite_bytes": _tflite(), "path_prefix": str(tmp / "m"),
                      "overwrite": True},
             st.one_of(junk.filter(lambda v: not isinstance(v, str)),
                       st.text(max_size=6).filter(
                 lambda v: not re.fullmatch(r"[A-Za-z_]\w*", v, re.ASCII)))),
        Case("write_c_source", export.write_c_source, "path_prefix",
             lambda: {"tflite_bytes": _tflite(), "path_prefix": str(tmp / "m"),
                      "overwrite": True},
             bad_path),
        Case("write_c_source", export.write_c_source, "tflite_bytes",
             lambda: {"tflite_bytes": _tflite(), "path_prefix": str(tmp / "m"),
                      "overwrite": True},
             bad_tflite),
        Case("save_model", export.save_model, "model",
             lambda: {"model": _mlp(), "path": str(tmp / "m.keras"),
                      "overwrite": True}, bad_model),
        Case("save_model", export.save_model, "path",
             lambda: {"model": _mlp(), "path": str(tmp / "m.keras"),
                      "overwrite": True},
             st.one_of(bad_path, st.just(str(tmp / "m.h5")))),
        Case("information_floor_bytes", export.information_floor_bytes, "bits",
             lambda: {"rows": []}, bad_int(1)),
    ]  # fmt: skip


CASE_IDS = [str(c) for c in _cases(pathlib.Path("."))]


def _names_argument(message, argument):
    return re.search(rf"`{re.escape(argument)}`|\b{re.escape(argument)}=", message)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    return {str(c): c for c in _cases(tmp)}


_VALID_CALLS_RUN = set()


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_argument_raises_a_clear_error(cases, case_id):
    case = cases[case_id]
    if case.name not in _VALID_CALLS_RUN:  # the valid call works
        case.function(**case.valid())
        _VALID_CALLS_RUN.add(case.name)

    @FUZZ_SETTINGS
    @given(value=case.bad)
    def bad_call(value):
        kwargs = case.valid() | {case.argument: value}
        with pytest.raises((ValueError, TypeError)) as raised:
            case.function(**kwargs)
        assert _names_argument(str(raised.value), case.argument), (
            f"{case}: the message does not name `{case.argument}`: {raised.value}"
        )

    bad_call()
