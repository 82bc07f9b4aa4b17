"""Pruning under tf.distribute: MirroredStrategy on 2 logical CPU devices,
and MultiWorkerMirroredStrategy with 2 worker processes on localhost."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_in_fresh_process

import keras_pruning as kp

_RUNNER = os.path.join(os.path.dirname(__file__), "multi_worker_runner.py")
_WORKER_TIMEOUT_S = 240


def test_mirrored_strategy_prunes_identically_on_every_replica(tmp_path):
    # Logical devices must be set before TensorFlow starts: a fresh process.
    report = run_in_fresh_process(
        f"""
        import json
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        import keras_pruning as kp

        keras.utils.set_random_seed(1)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        rng = np.random.default_rng(0)
        x = rng.random((128, 8)).astype("float32")
        y = rng.integers(0, 3, 128)
        with strategy.scope():
            model = kp.prune_low_magnitude(
                keras.Sequential([
                    keras.Input((8,)),
                    keras.layers.Dense(16, activation="relu"),
                    keras.layers.Dense(3),
                ]),
                kp.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2),
            )
            model.compile(keras.optimizers.Adam(0.01),
                          "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[kp.UpdatePruningStep()])

        def per_replica(variable):
            values = strategy.experimental_local_results(variable.value)
            return [np.asarray(v) for v in values]

        wrappers = kp.pruning_wrappers(model)
        masks = [per_replica(m) for w in wrappers for m in w.masks]
        variables = [per_replica(v) for v in model.weights]
        path = {str(tmp_path / "mirrored.keras")!r}
        model.save(path)
        loaded = keras.models.load_model(path)
        print(json.dumps({{
            "replicas": strategy.num_replicas_in_sync,
            "mirrored": [type(m.value).__name__ for w in wrappers for m in w.masks],
            "masks_equal": [all(np.array_equal(r[0], v) for v in r) for r in masks],
            "variables_equal": all(
                all(np.array_equal(r[0], v) for v in r) for r in variables),
            "sparsity": [float(1 - r[0].mean()) for r in masks],
            "steps": [w.pruning_step for w in wrappers],
            "iterations": int(model.optimizer.iterations.numpy()),
            "saved_kernel_sparsity": [
                float(np.mean(keras.ops.convert_to_numpy(w.layer.kernel) == 0))
                for w in kp.pruning_wrappers(loaded)],
        }}))
        """
    )
    assert report["replicas"] == 2
    assert report["mirrored"] == ["MirroredVariable", "MirroredVariable"]
    assert report["masks_equal"] == [True, True]
    assert report["variables_equal"]
    # 128 samples / global batch 16 = 8 steps per epoch: stepped once per
    # global step, not once per replica.
    assert report["steps"] == [16, 16] and report["iterations"] == 16
    assert report["sparsity"] == pytest.approx([0.75, 0.75])
    assert report["saved_kernel_sparsity"] == pytest.approx([0.75, 0.75])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_multi_worker_strategy_prunes_identically_on_both_workers(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    try:
        for index in range(2):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            workers.append(
                subprocess.Popen(
                    [sys.executable, _RUNNER, str(tmp_path / f"worker{index}.npz")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={
                        **os.environ,
                        "TF_CONFIG": json.dumps(tf_config),
                        "TF_CPP_MIN_LOG_LEVEL": "3",
                    },
                )
            )
        outputs = [w.communicate(timeout=_WORKER_TIMEOUT_S) for w in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["replicas"] == 2
        # 128 samples / global batch 16 = 8 global steps per epoch, 2 epochs.
        assert report["steps"] == [16, 16] and report["iterations"] == 16

    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert sorted(first.files) == ["mask_0", "mask_1", "masked_0", "masked_1"]
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    for i in range(2):
        mask = first[f"mask_{i}"]
        assert mask.sum() == kp.masks.num_kept(mask.size, 0.75)
        assert np.all(first[f"masked_{i}"][~mask] == 0)
