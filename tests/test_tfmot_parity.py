"""Parity with TFMOT 0.8.1 (`tfmot.sparsity.keras`) on tf_keras.

Importing TFMOT sets TF_USE_LEGACY_KERAS=1 for the whole process, so TFMOT
runs in a subprocess (`tests/tfmot_runner.py`), started once for this module
(once per session under pytest-xdist) with a JSON spec of every case; weights
and data go in, and schedules, masks, thresholds and pruning steps come back,
through files in a temporary folder. Our twin of each training case runs in
this process meanwhile.

What we promise to match: the schedules' `(should_prune, sparsity)` at every
step (except that ours also prune at `end_step` when TFMOT's grid misses it),
the first training batch being step 1, and, after training with a zero
learning rate from identical weights, every mask, threshold and pruning step
(and, trained with Adam on the same batches, every mask and trained weight);
with `block_size`, every block mask (thresholds to float rounding) wherever
each kernel axis is a multiple of the block or one short of one; with
`sparsity_m_by_n`, every mask (TFMOT's threshold is a placeholder 999).
"""

import json
import os
import re
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_pruning as kp
from keras_pruning.masks import num_kept

try:
    import fcntl
except ImportError:  # not POSIX: each xdist worker computes its own results
    fcntl = None

RUNNER = Path(__file__).with_name("tfmot_runner.py")
SEED = 20240611

# The PolynomialDecay of the training parity tests.
POLYNOMIAL = (
    "PolynomialDecay",
    {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.8,
        "begin_step": 0,
        "end_step": 20,
        "power": 3,
        "frequency": 5,
    },
)

# ---------------------------------------------------------------------------
# Schedules: id -> (class name, kwargs, steps, steps where only ours prunes).
# The last entry is the documented difference: when end_step - begin_step is
# not a multiple of frequency, ours also prune at end_step; TFMOT does not.
SCHEDULE_CASES = {
    "constant_default_frequency": (
        "ConstantSparsity",
        {"target_sparsity": 0.5, "begin_step": 0},
        range(0, 351),
        [],
    ),
    "constant_begin_3_frequency_4": (
        "ConstantSparsity",
        {"target_sparsity": 0.6, "begin_step": 3, "frequency": 4},
        range(0, 61),
        [],
    ),
    "constant_end_on_grid": (
        "ConstantSparsity",
        {"target_sparsity": 0.3, "begin_step": 10, "end_step": 52, "frequency": 7},
        range(0, 71),
        [],
    ),
    "constant_end_off_grid": (
        "ConstantSparsity",
        {"target_sparsity": 0.3, "begin_step": 10, "end_step": 50, "frequency": 7},
        range(0, 71),
        [50],
    ),
    "constant_end_equals_begin": (
        "ConstantSparsity",
        {"target_sparsity": 0.9, "begin_step": 5, "end_step": 5, "frequency": 3},
        range(0, 21),
        [],
    ),
    "polynomial_tfmot_reference": (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.2,
            "final_sparsity": 0.8,
            "begin_step": 100,
            "end_step": 110,
            "power": 3,
            "frequency": 2,
        },
        range(90, 131),
        [],
    ),
    # The schedule the training parity tests use, checked step by step too.
    "polynomial_training_schedule": (*POLYNOMIAL, range(0, 41), []),
    "polynomial_power_2_off_grid": (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.1,
            "final_sparsity": 0.9,
            "begin_step": 7,
            "end_step": 30,
            "power": 2,
            "frequency": 4,
        },
        range(0, 51),
        [30],
    ),
    "polynomial_power_1.5_every_step": (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.05,
            "final_sparsity": 0.75,
            "begin_step": 3,
            "end_step": 13,
            "power": 1.5,
            "frequency": 1,
        },
        range(0, 21),
        [],
    ),
    "polynomial_default_frequency_misses_final": (
        "PolynomialDecay",
        {
            "initial_sparsity": 0.0,
            "final_sparsity": 0.5,
            "begin_step": 0,
            "end_step": 150,
        },
        range(0, 401),
        [150],
    ),
}

# ---------------------------------------------------------------------------
# Training: the same Sequential model in tf_keras (subprocess) and Keras 3.
ARCHITECTURES = {
    "mlp": (
        (20,),
        [["Dense", {"units": 32, "activation": "relu"}], ["Dense", {"units": 10}]],
    ),
    "cnn": (
        (8, 8, 3),
        [
            ["Conv2D", {"filters": 4, "kernel_size": 3, "activation": "relu"}],
            ["Flatten", {}],
            ["Dense", {"units": 10}],
        ],
    ),
    # Kernels of 6 and 10 weights: at sparsity 0.25 they keep round(4.5) = 4
    # and round(7.5) = 8 weights (half-to-even).
    "tiny": ((3,), [["Dense", {"units": 2}], ["Dense", {"units": 5}]]),
    # Kernels (9, 7) and (7, 5): every axis one short of a multiple of 2.
    "odd": (
        (9,),
        [["Dense", {"units": 7, "activation": "relu"}], ["Dense", {"units": 5}]],
    ),
    # Kernels (32, 32) and (32, 10): two 16-input blocks per output.
    "wide": (
        (32,),
        [["Dense", {"units": 32, "activation": "relu"}], ["Dense", {"units": 10}]],
    ),
    # A (5, 6) kernel: 5 inputs are 3 short of two 4-input blocks.
    "short": ((5,), [["Dense", {"units": 6}]]),
}

CONSTANT = (
    "ConstantSparsity",
    {"target_sparsity": 0.6, "begin_step": 3, "frequency": 4},
)

# id -> (architecture, schedule, steps per epoch, epochs)
MATCHING_TRAININGS = {
    "mlp_polynomial": ("mlp", POLYNOMIAL, 23, 1),
    "cnn_constant": ("cnn", CONSTANT, 23, 1),
    # Steps carry over across epochs: 3 epochs of 8 batches end at step 24.
    "cnn_polynomial_three_epochs": ("cnn", POLYNOMIAL, 8, 3),
    "tiny_half_to_even": (
        "tiny",
        (
            "ConstantSparsity",
            {"target_sparsity": 0.25, "begin_step": 1, "frequency": 1},
        ),
        2,
        1,
    ),
    # The first training batch is step 1: a schedule beginning at step 1 prunes
    # after a single batch...
    "first_batch_is_step_1": (
        "mlp",
        (
            "ConstantSparsity",
            {"target_sparsity": 0.5, "begin_step": 1, "frequency": 1000},
        ),
        1,
        1,
    ),
    # ... and one beginning at step 2 does not.
    "no_pruning_before_begin_step": (
        "mlp",
        (
            "ConstantSparsity",
            {"target_sparsity": 0.5, "begin_step": 2, "frequency": 1000},
        ),
        1,
        1,
    ),
    "mlp_block_4x2_avg": ("mlp", POLYNOMIAL, 23, 1),
    "odd_block_2x2_avg_partial": ("odd", CONSTANT, 23, 1),
    "odd_block_2x2_max_partial": ("odd", CONSTANT, 23, 1),
    "wide_block_16x1": ("wide", POLYNOMIAL, 23, 1),
    # TFMOT computes m-by-n masks once, at step 1; ours at the schedule's
    # updates (3, 7, ...), ignoring its sparsity 0.6. With lr = 0 both agree.
    "mlp_m_by_n_2_4": ("mlp", CONSTANT, 23, 1),
    # The conv kernel has 3 input channels: one short group of 4.
    "cnn_m_by_n_2_4": ("cnn", CONSTANT, 23, 1),
    # 20 and 32 inputs: each ends with a short group of 2.
    "mlp_m_by_n_1_3": ("mlp", CONSTANT, 23, 1),
}
# TFMOT's prune_low_magnitude arguments of the structured cases (ours take
# the same; "AVG"/"MAX" are TFMOT's spellings).
PRUNE_KWARGS = {
    "mlp_block_4x2_avg": {"block_size": [4, 2], "block_pooling_type": "AVG"},
    "odd_block_2x2_avg_partial": {"block_size": [2, 2], "block_pooling_type": "AVG"},
    "odd_block_2x2_max_partial": {"block_size": [2, 2], "block_pooling_type": "MAX"},
    "wide_block_16x1": {"block_size": [16, 1]},
    "mlp_m_by_n_2_4": {"sparsity_m_by_n": [2, 4]},
    "cnn_m_by_n_2_4": {"sparsity_m_by_n": [2, 4]},
    "mlp_m_by_n_1_3": {"sparsity_m_by_n": [1, 3]},
    "short_block_4x1_shifted": {"block_size": [4, 1]},
}
# The documented difference in training: end_step 23 is off TFMOT's grid
# (0, 10, 20), so TFMOT stops at step 20's sparsity and ours reach 0.8 at 23.
OFF_GRID_SCHEDULE = (
    "PolynomialDecay",
    {
        "initial_sparsity": 0.0,
        "final_sparsity": 0.8,
        "begin_step": 0,
        "end_step": 23,
        "power": 1,
        "frequency": 10,
    },
)
# Trained with Adam(0.01) on the same batches: the masks and the trained
# weights match, not only the masks of a zero learning rate.
ADAM_TRAININGS = {
    "mlp_adam_polynomial": ("mlp", POLYNOMIAL, 23, 2),
    "cnn_adam_polynomial": ("cnn", POLYNOMIAL, 23, 2),
}
ADAM = ("Adam", {"learning_rate": 0.01})
ZERO_SGD = ("SGD", {"learning_rate": 0.0})
TRAININGS = {
    **MATCHING_TRAININGS,
    **ADAM_TRAININGS,
    "mlp_off_grid_end": ("mlp", OFF_GRID_SCHEDULE, 23, 1),
    # The documented block difference: 5 rows in blocks of 4.
    "short_block_4x1_shifted": (
        "short",
        ("ConstantSparsity", {"target_sparsity": 0.5, "begin_step": 1, "frequency": 1}),
        1,
        1,
    ),
}
BATCH_SIZE = 8
KERNEL_SIZES = {"mlp": (20 * 32, 32 * 10), "cnn": (3 * 3 * 3 * 4, 6 * 6 * 4 * 10)}


def make_schedule(spec):
    name, kwargs = spec
    return getattr(kp, name)(**kwargs)


def build_model(architecture):
    input_shape, layers = ARCHITECTURES[architecture]
    return keras.Sequential(
        [keras.Input(input_shape)]
        + [getattr(keras.layers, name)(**kwargs) for name, kwargs in layers]
    )


def layers_with_weights(model):
    return [layer for layer in model.layers if layer.weights]


def tie_free_normal(rng, shape):
    """float32 normal values whose magnitudes are all distinct."""
    values = rng.standard_normal(shape).astype("float32")
    assert np.unique(np.abs(values)).size == values.size
    return values


def make_inputs(training_id, rng):
    """Weights (`layer{i}_w{j}`) and data (`x`, `y`) for one training case."""
    architecture, _, steps_per_epoch, _ = TRAININGS[training_id]
    model = build_model(architecture)
    weights = {}
    for i, layer in enumerate(layers_with_weights(model)):
        for j, weight in enumerate(layer.weights):
            weights[f"layer{i}_w{j}"] = tie_free_normal(rng, tuple(weight.shape))
    samples = steps_per_epoch * BATCH_SIZE
    data = {
        "x": rng.standard_normal((samples, *model.input_shape[1:])).astype("float32"),
        "y": rng.integers(0, model.output_shape[-1], size=samples).astype("int32"),
    }
    return weights, data


def train_ours(training_id, weights, data):
    """Trains the Keras 3 twin of a TFMOT case.

    Returns the case's results in the runner's format (`mask_{i}_{j}`,
    `threshold_{i}_{j}`, `weight_{i}_{j}`, `step_{i}`, `num_masks`) and the
    warnings raised during `fit`."""
    architecture, schedule, _, epochs = TRAININGS[training_id]
    model = build_model(architecture)
    for i, layer in enumerate(layers_with_weights(model)):
        layer.set_weights(
            [weights[f"layer{i}_w{j}"] for j in range(len(layer.weights))]
        )
    pruned = kp.prune_low_magnitude(
        model,
        pruning_schedule=make_schedule(schedule),
        **PRUNE_KWARGS.get(training_id, {}),
    )
    name, kwargs = ADAM if training_id in ADAM_TRAININGS else ZERO_SGD
    pruned.compile(
        optimizer=getattr(keras.optimizers, name)(**kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned.fit(
            data["x"],
            data["y"],
            batch_size=BATCH_SIZE,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[kp.UpdatePruningStep()],
        )
    wrappers = kp.pruning_wrappers(pruned)
    out = {"num_masks": np.array([len(w.masks) for w in wrappers])}
    for i, wrapper in enumerate(wrappers):
        out[f"step_{i}"] = np.asarray(wrapper.pruning_step)
        for j, (weight, mask, threshold) in enumerate(
            zip(
                wrapper.prunable_weights, wrapper.masks, wrapper.thresholds, strict=True
            )
        ):
            out[f"mask_{i}_{j}"] = keras.ops.convert_to_numpy(mask)
            out[f"threshold_{i}_{j}"] = keras.ops.convert_to_numpy(threshold)
            out[f"weight_{i}_{j}"] = keras.ops.convert_to_numpy(weight)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return out, messages


def run_cases(folder):
    """Writes every case's inputs and both libraries' results into `folder`.

    TFMOT runs in one subprocess; our cases train in this process meanwhile.
    Ours go to `{id}_ours.npz` and `ours.json` (`{id: {"warnings": [...],
    "error": traceback or None}}`), TFMOT's to `schedules.json` and
    `{id}_tfmot.npz`."""
    rng = np.random.default_rng(SEED)
    spec = {
        "schedules_out": str(folder / "schedules.json"),
        "schedules": [
            {"id": case_id, "class": name, "kwargs": kwargs, "steps": list(steps)}
            for case_id, (name, kwargs, steps, _) in SCHEDULE_CASES.items()
        ],
        "trainings": [],
    }
    inputs = {}
    for training_id, (architecture, schedule, _, epochs) in TRAININGS.items():
        weights, data = make_inputs(training_id, rng)
        inputs[training_id] = (weights, data)
        np.savez(folder / f"{training_id}_weights.npz", **weights)
        np.savez(folder / f"{training_id}_data.npz", **data)
        name, kwargs = schedule
        spec["trainings"].append(
            {
                "id": training_id,
                "input_shape": list(ARCHITECTURES[architecture][0]),
                "layers": ARCHITECTURES[architecture][1],
                "schedule": {"class": name, "kwargs": kwargs},
                "batch_size": BATCH_SIZE,
                "epochs": epochs,
                "weights": str(folder / f"{training_id}_weights.npz"),
                "data": str(folder / f"{training_id}_data.npz"),
                "out": str(folder / f"{training_id}_tfmot.npz"),
                "prune_kwargs": PRUNE_KWARGS.get(training_id, {}),
                "optimizer": dict(
                    zip(
                        ("class", "kwargs"),
                        ADAM if training_id in ADAM_TRAININGS else ZERO_SGD,
                        strict=True,
                    )
                ),
            }
        )
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec))

    env = dict(os.environ)
    env.update(
        TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""
    )
    log_path = folder / "tfmot_runner.log"
    # The log is a file, not a pipe: a full pipe would stall the runner while
    # this process trains its own cases.
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            [sys.executable, str(RUNNER), str(spec_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            meta = {}
            for training_id, (weights, data) in inputs.items():
                keras.utils.clear_session()
                meta[training_id] = {"warnings": [], "error": None}
                try:
                    out, messages = train_ours(training_id, weights, data)
                except Exception:  # reported by the case's tests
                    meta[training_id]["error"] = traceback.format_exc()
                else:
                    np.savez(folder / f"{training_id}_ours.npz", **out)
                    meta[training_id]["warnings"] = messages
            (folder / "ours.json").write_text(json.dumps(meta))
            process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, (
        f"tfmot_runner.py failed ({process.returncode}):\n"
        f"{log_path.read_text()[-5000:]}"
    )


def load_npz(path):
    with np.load(path) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case's results from TFMOT and from ours, computed once.

    Under pytest-xdist, the first worker to get here computes them in the
    session's shared temporary folder and the others load them (the recipe of
    xdist's documentation), so TF starts in one subprocess per session.

    Returns `{"tfmot_schedules": {id: [[should_prune, sparsity], ...]},
    "tfmot": {id: {key: array}}, "ours": {id: {key: array}},
    "ours_meta": {id: {"warnings": [...], "error": ...}}, "folder": the
    folder of the inputs}`.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") and fcntl is not None:
        folder = tmp_path_factory.getbasetemp().parent / "tfmot_parity"
        folder.mkdir(exist_ok=True)
        with open(folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "done").exists():
                run_cases(folder)
                (folder / "done").touch()
    else:
        folder = tmp_path_factory.mktemp("tfmot_parity")
        run_cases(folder)
    meta = json.loads((folder / "ours.json").read_text())
    return {
        "tfmot_schedules": json.loads((folder / "schedules.json").read_text()),
        "tfmot": {i: load_npz(folder / f"{i}_tfmot.npz") for i in TRAININGS},
        "ours": {
            i: load_npz(folder / f"{i}_ours.npz")
            for i in TRAININGS
            if meta[i]["error"] is None
        },
        "ours_meta": meta,
        "folder": folder,
    }


def get_case(results, training_id):
    """`(ours, our warnings, theirs)` for a training case."""
    error = results["ours_meta"][training_id]["error"]
    if error is not None:
        pytest.fail(f"Training case {training_id!r} raised:\n{error}")
    return (
        results["ours"][training_id],
        results["ours_meta"][training_id]["warnings"],
        results["tfmot"][training_id],
    )


def assert_same_structure(ours, theirs):
    """Same wrappers, same pruned weights, same shapes, in the same order."""
    assert ours["num_masks"].tolist() == theirs["num_masks"].tolist()
    assert sorted(ours) == sorted(theirs)
    for key, value in ours.items():
        assert value.shape == theirs[key].shape, key


def assert_matches_tfmot(ours, theirs, training_id=None):
    """Every mask, zero count, threshold, trained weight and pruning step.

    Block thresholds are pooled means, summed in another order than TF's
    pooling: equal to float rounding. TFMOT's m-by-n threshold is a constant
    999; ours is the smallest kept magnitude."""
    kwargs = PRUNE_KWARGS.get(training_id, {})
    assert_same_structure(ours, theirs)
    for i, num_masks in enumerate(ours["num_masks"].tolist()):
        assert int(ours[f"step_{i}"]) == int(theirs[f"step_{i}"])
        for j in range(num_masks):
            mask, their_mask = ours[f"mask_{i}_{j}"], theirs[f"mask_{i}_{j}"]
            assert mask.dtype == np.bool_
            assert set(np.unique(their_mask).tolist()) <= {0.0, 1.0}
            np.testing.assert_array_equal(mask, their_mask.astype(bool))
            assert int((~mask).sum()) == int((their_mask == 0).sum())
            threshold, their_threshold = (
                ours[f"threshold_{i}_{j}"],
                theirs[f"threshold_{i}_{j}"],
            )
            weight = ours[f"weight_{i}_{j}"]
            if "sparsity_m_by_n" in kwargs:
                assert their_threshold == 999.0
                assert threshold == np.abs(weight[mask]).min()
            elif "block_size" in kwargs:
                np.testing.assert_allclose(threshold, their_threshold, rtol=1e-6)
            else:
                np.testing.assert_array_equal(threshold, their_threshold)
            # With lr = 0 the trained weights are the masked initial weights.
            np.testing.assert_array_equal(weight, theirs[f"weight_{i}_{j}"])
            assert int((weight == 0).sum()) == int((~mask).sum())


def kept(results, training_id):
    """`(ours, theirs)`: the number of weights each mask keeps."""
    ours, _, theirs = get_case(results, training_id)
    count = ours["num_masks"].tolist()
    return tuple(
        [int(r[f"mask_{i}_{j}"].sum()) for i, n in enumerate(count) for j in range(n)]
        for r in (ours, theirs)
    )


def tfmot_schedule(results, case_id):
    """`{step: [should_prune, sparsity]}` from TFMOT for a schedule case."""
    steps = SCHEDULE_CASES[case_id][2]
    return dict(zip(steps, results["tfmot_schedules"][case_id], strict=True))


# ---------------------------------------------------------------------------
# 1. Schedules


def test_every_case_was_run(results):
    assert set(results["tfmot_schedules"]) == set(SCHEDULE_CASES)
    for case_id, (_, _, steps, _) in SCHEDULE_CASES.items():
        assert len(results["tfmot_schedules"][case_id]) == len(steps)
    assert set(results["tfmot"]) == set(results["ours_meta"]) == set(TRAININGS)


@pytest.mark.parametrize("case_id", list(SCHEDULE_CASES))
def test_schedule_matches_tfmot(results, case_id):
    name, kwargs, steps, only_ours = SCHEDULE_CASES[case_id]
    ours = getattr(kp, name)(**kwargs)
    theirs = results["tfmot_schedules"][case_id]
    differences = []
    for step, (their_prune, their_sparsity) in zip(steps, theirs, strict=True):
        our_prune, our_sparsity = ours(step)
        assert isinstance(our_prune, bool)
        # TFMOT computes in float32.
        assert our_sparsity == pytest.approx(their_sparsity, rel=1e-6, abs=1e-7), step
        if our_prune != their_prune:
            differences.append((step, our_prune, their_prune))
    # The only difference: ours also prune at an end_step off TFMOT's grid.
    assert differences == [(step, True, False) for step in only_ours]
    for step in only_ours:
        assert step == kwargs["end_step"]
        assert (step - kwargs["begin_step"]) % kwargs.get("frequency", 100) != 0


def test_polynomial_decay_tfmot_reference_values(results):
    steps = SCHEDULE_CASES["polynomial_tfmot_reference"][2]
    theirs = tfmot_schedule(results, "polynomial_tfmot_reference")
    ours = kp.PolynomialDecay(0.2, 0.8, 100, 110, 3, 2)
    expected = {100: 0.2, 102: 0.4928, 105: 0.725, 110: 0.8}
    for step, sparsity in expected.items():
        assert theirs[step][1] == pytest.approx(sparsity, abs=1e-6)
        assert ours(step)[1] == pytest.approx(sparsity, abs=1e-12)
    assert [s for s in steps if theirs[s][0]] == [100, 102, 104, 106, 108, 110]
    assert [s for s in steps if ours(s)[0]] == [100, 102, 104, 106, 108, 110]


def test_tfmot_misses_final_sparsity_ours_reach_it(results):
    """PolynomialDecay(0, 0.5, 0, 150) at frequency 100: TFMOT's last update is
    at step 100 (sparsity ~0.481); ours also update at step 150, to 0.5."""
    case_id = "polynomial_default_frequency_misses_final"
    steps = SCHEDULE_CASES[case_id][2]
    theirs = tfmot_schedule(results, case_id)
    ours = make_schedule(SCHEDULE_CASES[case_id][:2])
    assert [s for s in steps if theirs[s][0]] == [0, 100]
    assert [s for s in steps if ours(s)[0]] == [0, 100, 150]
    assert theirs[100][1] == pytest.approx(0.5 - 0.5 / 27, abs=1e-6)
    assert ours(150) == (True, 0.5)


# ---------------------------------------------------------------------------
# 2. Masks after training with a zero learning rate


@pytest.mark.parametrize("training_id", list(MATCHING_TRAININGS))
def test_masks_match_tfmot(results, training_id):
    ours, _, theirs = get_case(results, training_id)
    _, _, steps_per_epoch, epochs = TRAININGS[training_id]
    assert_matches_tfmot(ours, theirs, training_id)
    for i in range(len(ours["num_masks"])):
        assert int(ours[f"step_{i}"]) == steps_per_epoch * epochs


@pytest.mark.parametrize("training_id", list(ADAM_TRAININGS))
def test_adam_training_matches_tfmot(results, training_id):
    """Adam(0.01) for 46 steps, masks updated at steps 5 to 20: the kept
    weights get the same gradients and updates in both libraries, and pruned
    weights stay pruned, so masks and effective weights agree."""
    ours, _, theirs = get_case(results, training_id)
    assert_same_structure(ours, theirs)
    initial = load_npz(results["folder"] / f"{training_id}_weights.npz")
    for i, num_masks in enumerate(ours["num_masks"].tolist()):
        assert int(ours[f"step_{i}"]) == int(theirs[f"step_{i}"]) == 46
        for j in range(num_masks):
            mask = ours[f"mask_{i}_{j}"]
            np.testing.assert_array_equal(mask, theirs[f"mask_{i}_{j}"] == 1)
            assert 1 - mask.mean() == pytest.approx(0.8, abs=0.01)
            weight = np.where(mask, ours[f"weight_{i}_{j}"], 0)
            their_weight = np.where(mask, theirs[f"weight_{i}_{j}"], 0)
            np.testing.assert_allclose(weight, their_weight, rtol=1e-5, atol=1e-6)
            # Training moved every kept weight.
            assert np.all(weight[mask] != initial[f"layer{i}_w{j}"][mask])


@pytest.mark.parametrize(
    ("training_id", "sparsity"),
    [
        ("mlp_polynomial", 0.8),
        ("cnn_polynomial_three_epochs", 0.8),
        ("cnn_constant", 0.6),
    ],
)
def test_masks_reach_scheduled_sparsity(results, training_id, sparsity):
    sizes = KERNEL_SIZES[TRAININGS[training_id][0]]
    expected = [num_kept(size, sparsity) for size in sizes]
    assert expected == [round(size * (1 - sparsity)) for size in sizes]
    assert kept(results, training_id) == (expected, expected)


def test_half_to_even_rounding_matches_tfmot(results):
    # 6 * 0.75 = 4.5 -> 4 kept; 10 * 0.75 = 7.5 -> 8 kept.
    assert kept(results, "tiny_half_to_even") == ([4, 8], [4, 8])


# ---------------------------------------------------------------------------
# 3. The first training batch is step 1


def test_first_batch_is_step_1(results):
    ours, _, theirs = get_case(results, "first_batch_is_step_1")
    for i in range(2):
        assert int(ours[f"step_{i}"]) == int(theirs[f"step_{i}"]) == 1
    half = [size // 2 for size in KERNEL_SIZES["mlp"]]
    assert kept(results, "first_batch_is_step_1") == (half, half)


def test_no_pruning_before_begin_step(results):
    ours, messages, theirs = get_case(results, "no_pruning_before_begin_step")
    for i in range(2):
        assert int(ours[f"step_{i}"]) == int(theirs[f"step_{i}"]) == 1
        assert ours[f"mask_{i}_0"].all()
        assert (theirs[f"mask_{i}_0"] == 1).all()
    # Ours also say so.
    assert any(
        re.search(r"at pruning step 1 without any mask update", m) for m in messages
    ), messages


# ---------------------------------------------------------------------------
# The documented difference, in training


def test_ours_reach_final_sparsity_at_off_grid_end_step(results):
    """PolynomialDecay(0, 0.8, 0, 23, power=1, frequency=10) over 23 steps:
    both update at steps 10 and 20; only ours update again at step 23, to 0.8.
    Our final masks are therefore subsets of TFMOT's."""
    ours, _, theirs = get_case(results, "mlp_off_grid_end")
    schedule = make_schedule(OFF_GRID_SCHEDULE)
    assert_same_structure(ours, theirs)
    sizes = KERNEL_SIZES["mlp"]
    assert kept(results, "mlp_off_grid_end") == (
        [num_kept(size, 0.8) for size in sizes],
        [num_kept(size, schedule.sparsity(20)) for size in sizes],
    )
    for i in range(2):
        assert int(ours[f"step_{i}"]) == int(theirs[f"step_{i}"]) == 23
        mask, their_mask = ours[f"mask_{i}_0"], theirs[f"mask_{i}_0"].astype(bool)
        assert int(their_mask.sum()) > int(mask.sum())
        assert not (mask & ~their_mask).any()


# ---------------------------------------------------------------------------
# 4. Block and m-by-n masks


def _block_counts(mask, block_size):
    """`(kept, total)` blocks of a 2-D mask, asserting it is block-constant."""
    r, c = block_size
    corners = mask[::r, ::c]
    expanded = np.repeat(np.repeat(corners, r, axis=0), c, axis=1)
    np.testing.assert_array_equal(mask, expanded[: mask.shape[0], : mask.shape[1]])
    return int(corners.sum()), corners.size


@pytest.mark.parametrize(
    ("training_id", "sparsity"),
    [
        ("mlp_block_4x2_avg", 0.8),
        ("odd_block_2x2_avg_partial", 0.6),
        ("odd_block_2x2_max_partial", 0.6),
        ("wide_block_16x1", 0.8),
    ],
)
def test_block_masks_keep_num_kept_blocks(results, training_id, sparsity):
    ours, _, theirs = get_case(results, training_id)
    block_size = PRUNE_KWARGS[training_id]["block_size"]
    for i in range(len(ours["num_masks"])):
        kept, total = _block_counts(ours[f"mask_{i}_0"], block_size)
        assert kept == num_kept(total, sparsity)
        assert _block_counts(theirs[f"mask_{i}_0"].astype(bool), block_size) == (
            kept,
            total,
        )


@pytest.mark.parametrize(
    ("training_id", "m_by_n"),
    [
        ("mlp_m_by_n_2_4", (2, 4)),
        ("cnn_m_by_n_2_4", (2, 4)),
        ("mlp_m_by_n_1_3", (1, 3)),
    ],
)
def test_m_by_n_masks_keep_n_minus_m_of_each_input_group(results, training_id, m_by_n):
    m, n = m_by_n
    ours, _, _ = get_case(results, training_id)
    for i in range(len(ours["num_masks"])):
        mask = np.moveaxis(ours[f"mask_{i}_0"], -2, -1)
        length = mask.shape[-1]
        for start in range(0, length, n):
            kept = mask[..., start : start + n].sum(axis=-1)
            assert (kept == min(n - m, length - start)).all()


def test_tfmot_scores_shifted_blocks_when_padding_exceeds_one(results):
    """A (5, 6) kernel in (4, 1) blocks: both libraries mask rows 0-3 and row
    4 of each output as blocks. Ours score those blocks; TFMOT's SAME pooling
    pads one row before and two after, so it scores rows 0-2 and 3-4."""
    ours, _, theirs = get_case(results, "short_block_4x1_shifted")
    with np.load(results["folder"] / "short_block_4x1_shifted_weights.npz") as weights:
        kernel = np.abs(weights["layer0_w0"])

    def kept_blocks(first, second):
        scores = np.stack([first.mean(axis=0), second.mean(axis=0)])
        best = np.argsort(-scores, axis=None)[: num_kept(scores.size, 0.5)]
        kept = np.zeros(scores.size, bool)
        kept[best] = True
        return kept.reshape(scores.shape)

    for mask, first, second in (
        (ours["mask_0_0"], kernel[:4], kernel[4:]),
        (theirs["mask_0_0"].astype(bool), kernel[:3], kernel[3:]),
    ):
        _block_counts(mask, (4, 1))
        np.testing.assert_array_equal(mask[[0, 4]], kept_blocks(first, second))
    assert (ours["mask_0_0"] != theirs["mask_0_0"].astype(bool)).any()
