"""The benchmark's pure helpers (`benchmarks/_common.py`, `benchmarks/report.py`):
the floor formula, interleaved timing, medians, slopes, stamping and targets.
No timing is asserted; the benchmarks themselves run with `make bench`."""

import importlib.util
import json
import math
import os
import sys

import pytest

import keras_pruning as kp
from keras_pruning import export

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(BENCHMARKS, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("_common")
# report.py imports `_common` by name, as the benchmark scripts do.
sys.modules.setdefault("_common", common)
report = _load("report")
accuracy = _load("accuracy")


def test_entropy_is_one_bit_at_half_and_zero_at_the_ends():
    assert common.entropy_bits(0.5) == pytest.approx(1.0)
    assert common.entropy_bits(0.0) == 0.0
    assert common.entropy_bits(1.0) == 0.0
    assert common.entropy_bits(0.2) == pytest.approx(common.entropy_bits(0.8))


def test_entropy_rejects_a_sparsity_outside_0_1():
    with pytest.raises(ValueError, match="sparsity=1.5"):
        common.entropy_bits(1.5)


def test_floor_is_nnz_bytes_plus_the_mask_entropy():
    # 1000 weights, 200 kept: 200 * 8 bits + 1000 * H(0.8) bits.
    bits = 200 * 8 + 1000 * (-0.8 * math.log2(0.8) - 0.2 * math.log2(0.2))
    assert common.floor_bytes([(1000, 200)]) == math.ceil(bits / 8)
    # A dense weight costs its bytes; a fully pruned one costs nothing.
    assert common.floor_bytes([(64, 64)]) == 64
    assert common.floor_bytes([(64, 0)]) == 0
    assert common.floor_bytes([(16, 16), (16, 16)]) == 32


def test_floor_rejects_more_nonzeros_than_weights():
    with pytest.raises(ValueError, match="nnz=5"):
        common.floor_bytes([(4, 5)])


def test_floor_matches_the_library_report_floor():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(4)]
    )
    model = kp.prune_to_sparsity(model, 0.7)
    rows = kp.sparsity_report(model)
    assert any(0 < r.sparsity < 1 for r in rows)
    assert common.floor_bytes(
        [(r.size, r.nonzeros) for r in rows]
    ) == export.information_floor_bytes(rows)


class _Clock:
    """A fake clock that advances by one second per reading."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_interleaved_alternates_the_order_after_warmup():
    calls = []
    functions = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = common.interleaved(functions, repeats=3, warmup=1, clock=_Clock())
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert times == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}


def test_interleaved_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats=0"):
        common.interleaved({"a": lambda: None}, repeats=0)


def test_median_ratio_pairs_measurements_of_the_same_round():
    # Per-round ratios 2, 1.5 and 3: their median is 2.
    assert common.median_ratio([2.0, 3.0, 3.0], [1.0, 2.0, 1.0]) == 2.0
    assert common.median([3.0, 1.0, 2.0, 10.0]) == 2.5
    with pytest.raises(ValueError, match="equal length"):
        common.median_ratio([1.0], [1.0, 2.0])


def test_accuracy_seeds_default_to_one_quick_and_three_full():
    assert accuracy.seeds(quick=True) == (0,)
    assert accuracy.seeds(quick=False) == (0, 1, 2)
    assert accuracy.seeds(quick=True, count=5) == (0, 1, 2, 3, 4)


def test_over_seeds_reports_the_mean_and_sample_deviation():
    row = common.over_seeds([0.90, 0.88, 0.89], (0, 1, 2))
    assert row["accuracy"] == pytest.approx(0.89)
    assert row["std"] == pytest.approx(0.01)
    assert row["accuracies"] == [0.90, 0.88, 0.89]
    assert row["seeds"] == [0, 1, 2]
    assert common.over_seeds([0.9], (0,))["std"] == 0.0


def test_accuracy_target_compares_means_and_says_over_how_many_seeds():
    result = _result(1.02, 1.3, [0.90, 0.888], [0.89, 0.88], 0.891, 1.25, 2.0)
    result["accuracy"]["methods"]["local"]["0.5"] = common.over_seeds(
        [0.88, 0.89, 0.90], (0, 1, 2)
    )
    result["accuracy"]["methods"]["tfmot"]["0.5"] = common.over_seeds(
        [0.895, 0.895, 0.895], (0, 1, 2)
    )
    row = next(r for r in report.targets(result) if "at 50%" in r["target"])
    assert row["target"] == "Accuracy at 50%: local >= TFMOT (mean of 3 seeds)"
    assert row["measured"] == "89.00% vs 89.50%"
    assert not row["pass"]


def _accuracy_section(methods, dense_control, tfmot_dense_control):
    """An accuracy section at 50% sparsity, seeds 0 to 2."""
    return {
        "setup": {
            "sparsities": [0.5],
            "seeds": {"local": [0, 1, 2]},
            "train_examples": 10,
            "test_examples": 5,
            "batch_size": 2,
            "optimizer": "Adam",
            "note": "",
        },
        "dense": {"accuracy": 0.8},
        "dense_control": dense_control,
        "tfmot_dense_control": tfmot_dense_control,
        "methods": methods,
    }


def test_accuracy_table_shows_seed_means_with_their_deviation():
    three = common.over_seeds([0.89, 0.90, 0.91], (0, 1, 2))
    one = common.over_seeds([0.85], (0,))
    section = _accuracy_section(
        {
            "local": {"0.5": {**three, "sparsity": 0.5}},
            "global": {"0.5": {**one, "sparsity": 0.5}},
        },
        three,
        one,
    )
    text = "\n".join(report._accuracy_md(section))
    assert "| local | 90.00 ± 1.00 |" in text
    assert "| global | 85.00 |" in text
    assert "Keras 3 90.00 ± 1.00%, tf_keras 85.00%" in text


def test_training_order_is_one_permutation_per_epoch_fixed_by_its_seed():
    order = common.training_order(10, 2, seed=3)
    assert len(order) == 20
    assert sorted(order[:10]) == list(range(10))
    assert sorted(order[10:]) == list(range(10))
    assert list(order[:10]) != list(order[10:])
    assert list(order) == list(common.training_order(10, 2, seed=3))
    assert list(order) != list(common.training_order(10, 2, seed=4))


def test_accuracy_table_compares_local_and_tfmot_seed_by_seed():
    def row(accuracies):
        return {**common.over_seeds(accuracies, (0, 1, 2)), "sparsity": 0.5}

    section = _accuracy_section(
        {
            "tfmot": {"0.5": row([0.895, 0.89, 0.912])},
            "local": {"0.5": row([0.90, 0.89, 0.91])},
        },
        row([0.9, 0.9, 0.9]),
        row([0.899, 0.9, 0.901]),
    )
    text = "\n".join(report._accuracy_md(section))
    assert "50%: +0.50 / +0.00 / -0.20" in text
    assert "dense control: +0.10 / +0.00 / -0.10" in text


def test_backend_targets_check_every_backend_and_model():
    result = {
        "backends": {
            "backends": {
                "jax": {"cnn": {"ratio": 1.04}, "mlp": {"ratio": 1.06}},
                "torch": {"cnn": {"ratio": 1.01}},
            }
        }
    }
    rows = report.targets(result)
    assert [(r["target"], r["pass"]) for r in rows] == [
        ("Overhead cnn on jax: pruned/dense <= 1.05", True),
        ("Overhead mlp on jax: pruned/dense <= 1.05", False),
        ("Overhead cnn on torch: pruned/dense <= 1.05", True),
    ]


def test_backend_table_shows_each_backends_ratios_and_mask_update_time():
    row = {
        "dense_step_ms": 2.5,
        "ratio": 1.04,
        "noop_callback_ratio": 1.01,
        "ratio_to_noop_callback": 1.03,
        "never_updated_ratio": 1.02,
        "mask_update_ms": 4.96,
    }
    lines = report._backends_md({"backends": {"jax": {"mlp": row}}})
    assert "| jax | mlp | 2.50 | 1.040x | 1.010x | 1.030x | 1.020x | - | 5.0 |" in lines
    row["held_ratio"] = 1.007
    lines = report._backends_md({"backends": {"jax": {"mlp": row}}})
    assert (
        "| jax | mlp | 2.50 | 1.040x | 1.010x | 1.030x | 1.020x | 1.007x | 5.0 |"
        in lines
    )


def _overhead_row(**measured):
    """A section 1 row with the ratios every run has, plus `measured`."""
    return {
        "parameters": 1234,
        "dense_step_ms": 2.5,
        "ratio": 1.16,
        "noop_callback_ratio": 1.0,
        "ratio_to_noop_callback": 1.15,
        "mask_over_weight_bytes": 0.25,
        "state_over_weight_bytes": 0.25,
        **measured,
    }


def test_overhead_table_shows_the_cost_of_masks_never_updated():
    row = _overhead_row(never_updated_ratio=1.11)
    held = {**row, "held_ratio": 1.04}
    lines = report._overhead_md(
        {"models": {"mlp": {"keras_pruning": held, "tfmot": row}}}
    )
    assert (
        "| mlp | 1,234 | keras_pruning | 2.50 | 1.160x | 1.000x | 1.150x | "
        "1.110x | 1.040x | 0.250 | 0.250 |" in lines
    )
    assert (
        "| mlp | 1,234 | tfmot | 2.50 | 1.160x | 1.000x | 1.150x | "
        "1.110x | - | 0.250 | 0.250 |" in lines
    )
    assert "| masks never updated / dense | held at 0 (opt-in) / dense |" in lines[0]


def test_tables_show_a_dash_for_contenders_a_result_file_lacks():
    row = _overhead_row(mask_update_ms=4.96)
    lines = report._overhead_md({"models": {"mlp": {"keras_pruning": row}}})
    assert "| 1.150x | - | - | 0.250 |" in lines[2]
    lines = report._backends_md({"backends": {"jax": {"mlp": row}}})
    assert "| 1.150x | - | - | 5.0 |" in lines[2]


def test_loglog_slope_is_the_exponent_of_a_power_law():
    xs = [1e3, 1e4, 1e5, 1e6]
    assert common.loglog_slope(xs, [2 * x for x in xs]) == pytest.approx(1.0)
    assert common.loglog_slope(xs, [x**0.5 for x in xs]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="two"):
        common.loglog_slope([1.0], [1.0])


def test_schedule_reaches_the_final_sparsity_on_an_update():
    args = common.pruning_schedule_args(steps_per_epoch=938, final_sparsity=0.8)
    assert args["end_step"] % args["frequency"] == 0
    assert args["end_step"] <= 938
    schedule = kp.PolynomialDecay(**args)
    assert schedule(args["end_step"]) == (True, pytest.approx(0.8))
    assert common.pruning_schedule_args(5, 0.5)["frequency"] == 1


def test_stamp_carries_command_versions_machine_and_time():
    stamped = common.stamp({"x": 1}, "python benchmarks/run.py --quick", 0.0)
    assert stamped["x"] == 1
    provenance = stamped["provenance"]
    assert provenance["command"] == "python benchmarks/run.py --quick"
    assert provenance["versions"]["keras"] is not None
    assert set(common.PACKAGES) <= set(provenance["versions"])
    assert provenance["machine"]["cpu_count"] == os.cpu_count()
    assert provenance["timestamp"].endswith("+00:00")


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "sub" / "out.json"
    common.write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert os.listdir(tmp_path / "sub") == ["out.json"]


def _result(ours_ratio, tfmot_ratio, local, tfmot, dense, size_ratio, speedup):
    sparsities = [0.5, 0.8]
    return {
        "overhead": {
            "models": {
                "cnn": {
                    "keras_pruning": {"ratio": ours_ratio},
                    "tfmot": {"ratio": tfmot_ratio},
                }
            }
        },
        "accuracy": {
            "setup": {"sparsities": sparsities},
            "dense": {"accuracy": dense},
            "methods": {
                "local": {
                    str(s): {"accuracy": a}
                    for s, a in zip(sparsities, local, strict=True)
                },
                "tfmot": {
                    str(s): {"accuracy": a}
                    for s, a in zip(sparsities, tfmot, strict=True)
                },
            },
        },
        "size": {
            "sparsities": {"0.8": {"ratio_to_floor": {"micro_compressed": size_ratio}}}
        },
        "latency": {"speedup_vs_dense": {"channel_50/tflm": speedup}},
    }


def test_targets_pass_when_every_figure_is_within_its_bound():
    rows = report.targets(
        _result(1.02, 1.3, [0.90, 0.888], [0.89, 0.88], 0.891, 1.25, 2.0)
    )
    assert len(rows) == 7
    assert all(r["pass"] for r in rows)


def test_targets_fail_each_figure_outside_its_bound():
    rows = report.targets(
        _result(1.2, 1.1, [0.88, 0.88], [0.89, 0.87], 0.891, 1.4, 1.5)
    )
    failed = [r["target"] for r in rows if not r["pass"]]
    assert failed == [
        "Overhead cnn: pruned/dense step time <= 1.05",
        "Overhead cnn: <= TFMOT's ratio",
        "Accuracy at 50%: local >= TFMOT",
        "Accuracy at 80%: local within 0.5 points of dense",
        "Size at 80%: compressed micro file <= 1.3x the floor",
        "Latency: channel pruning at 50% >= 1.8x in TFLite Micro",
    ]
