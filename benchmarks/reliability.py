"""The runs behind docs/guides/reliability.md: resume equality, distributed
runs, mixed precision and a 1M x 64 Embedding. Each scenario runs in a fresh
process (logical devices, op determinism and dtype policies are process-wide);
prints one JSON object per scenario.

    .venv/bin/python benchmarks/reliability.py [--scenario NAME]
"""

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SCENARIOS = ("resume", "mirrored", "multi_worker", "mixed_precision", "embedding")
_RUNNER = os.path.join(
    os.path.dirname(__file__), "..", "tests", "multi_worker_runner.py"
)


def _data(n, dim=8):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, dim)).astype("float32"), rng.integers(0, 3, n)


def _mlp():
    import keras

    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )


def resume():
    """BackupAndRestore: crash at epoch 3, batch 4; resume; compare with an
    uninterrupted run, for both orders of the two callbacks."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_pruning as kp

    tf.config.experimental.enable_op_determinism()
    x, y = _data(64)

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch, batch) == (2, 3):
                raise RuntimeError("simulated crash")

    def run(backup_dir, backup_first, crash=False):
        keras.utils.set_random_seed(3)
        model = kp.prune_low_magnitude(
            _mlp(), kp.PolynomialDecay(0.0, 0.8, 0, 24, frequency=2)
        )
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        callbacks = [keras.callbacks.BackupAndRestore(backup_dir)]
        callbacks.insert(0 if not backup_first else 1, kp.UpdatePruningStep())
        if crash:
            callbacks.append(Crash())
        try:
            model.fit(
                x,
                y,
                batch_size=8,
                epochs=4,
                shuffle=False,
                verbose=0,
                callbacks=callbacks,
            )
        except RuntimeError:
            return None
        return model

    def arrays(model):
        # model.weights: Keras does not save its SeedGenerator counters.
        return [keras.ops.convert_to_numpy(v) for v in model.weights] + [
            keras.ops.convert_to_numpy(v) for v in model.optimizer.variables
        ]

    result = {}
    with tempfile.TemporaryDirectory() as root:
        for backup_first in (True, False):
            order = (
                "BackupAndRestore first" if backup_first else "UpdatePruningStep first"
            )
            straight = run(f"{root}/{backup_first}-straight", backup_first)
            run(f"{root}/{backup_first}", backup_first, crash=True)
            resumed = run(f"{root}/{backup_first}", backup_first)
            difference = max(
                float(np.max(np.abs(a.astype("float64") - b.astype("float64"))))
                for a, b in zip(arrays(straight), arrays(resumed), strict=True)
            )
            result[order] = {
                "steps": [w.pruning_step for w in kp.pruning_wrappers(resumed)],
                "max_abs_difference": difference,
                "sparsity": [round(r.sparsity, 4) for r in kp.sparsity_report(resumed)],
            }
    return result


def mirrored():
    """MirroredStrategy on 2 logical CPU devices, Keras fit."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np

    import keras_pruning as kp

    keras.utils.set_random_seed(1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = _data(128)
    with strategy.scope():
        model = kp.prune_low_magnitude(
            _mlp(), kp.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2)
        )
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=[kp.UpdatePruningStep()]
    )
    seconds = time.perf_counter() - start
    replicas = [
        [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
        for variable in model.variables
    ]
    identical = all(all(np.array_equal(r[0], v) for v in r) for r in replicas)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "global_steps": int(model.optimizer.iterations.numpy()),
        "pruning_steps": [w.pruning_step for w in kp.pruning_wrappers(model)],
        "all_variables_identical_on_replicas": identical,
        "sparsity": [round(r.sparsity, 4) for r in kp.sparsity_report(model)],
        "fit_seconds": round(seconds, 2),
    }


def multi_worker():
    """MultiWorkerMirroredStrategy: 2 worker processes on 127.0.0.1."""
    import numpy as np

    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    root = tempfile.mkdtemp()
    workers, start = [], time.perf_counter()
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            workers.append(
                subprocess.Popen(
                    [sys.executable, _RUNNER, f"{root}/worker{index}.npz"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env={**os.environ, "TF_CONFIG": json.dumps(config)},
                )
            )
        reports = [
            json.loads(w.communicate(timeout=300)[0].splitlines()[-1]) for w in workers
        ]
        seconds = time.perf_counter() - start
        first, second = (np.load(f"{root}/worker{i}.npz") for i in range(2))
        identical = all(np.array_equal(first[k], second[k]) for k in first.files)
        sparsity = [round(float(1 - first[f"mask_{i}"].mean()), 4) for i in range(2)]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        shutil.rmtree(root)
    return {
        "workers": reports,
        "masks_and_weights_identical_on_workers": identical,
        "sparsity": sparsity,
        "wall_seconds_including_startup": round(seconds, 1),
    }


def mixed_precision():
    """Prune, fit, strip, save and export under each mixed policy."""
    import keras
    import numpy as np

    import keras_pruning as kp
    from keras_pruning import export

    result = {}
    x, y = _data(64)
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(3),
                keras.layers.Activation("linear", dtype="float32"),
            ]
        )
        pruned = kp.prune_low_magnitude(
            model, kp.PolynomialDecay(0.0, 0.75, 0, 8, frequency=2)
        )
        pruned.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        pruned.fit(
            x, y, batch_size=8, epochs=2, verbose=0, callbacks=[kp.UpdatePruningStep()]
        )
        with tempfile.TemporaryDirectory() as root:
            pruned.save(f"{root}/m.keras")
            loaded = keras.models.load_model(f"{root}/m.keras")
            reload_error = float(
                np.abs(
                    loaded.predict(x, verbose=0) - pruned.predict(x, verbose=0)
                ).max()
            )
        stripped = kp.strip_pruning(pruned)
        verify = export.verify(export.to_tflite(stripped), stripped, x)
        result[policy] = {
            "mask_dtypes": sorted(
                {m.dtype for w in kp.pruning_wrappers(pruned) for m in w.masks}
            ),
            "sparsity": [round(r.sparsity, 4) for r in kp.sparsity_report(pruned)],
            "reload_max_abs_error": reload_error,
            "tflite_float32_max_abs_error": round(verify.max_abs_error, 5),
            "tflite_argmax_agreement": verify.argmax_agreement,
        }
        keras.config.set_dtype_policy("float32")
    return result


def embedding():
    """One mask update at sparsity 0.9 on an Embedding(1_000_000, 64)."""
    import keras

    import keras_pruning as kp

    wrapper = kp.PruneLowMagnitude(keras.layers.Embedding(1_000_000, 64))
    wrapper.build((None, 4))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    wrapper.update_masks(0.9)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = int(keras.ops.sum(keras.ops.cast(wrapper.masks[0], "int32")))
    return {
        "weights_mib": 1_000_000 * 64 * 4 / 2**20,
        "update_seconds": round(seconds, 2),
        "peak_rss_growth_mib": round((after - before) / 1024),
        "peak_rss_mib": round(after / 1024),
        "kept": kept,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(globals()[args.scenario]()))
        return
    for name in SCENARIOS:
        output = subprocess.run(
            [sys.executable, __file__, "--scenario", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(json.dumps({name: json.loads(output.splitlines()[-1])}))


if __name__ == "__main__":
    main()
