"""One worker of a MultiWorkerMirroredStrategy pruning run, for
test_distributed.py: `python multi_worker_runner.py OUT.npz`, with TF_CONFIG set.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy with two workers, for
any model (its symbolic build reduces a tuple of per-replica batches, which
the strategy does not support), so the workers train with a custom loop and
drive `UpdatePruningStep` by hand, as its docstring describes.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_pruning as kp  # noqa: E402

GLOBAL_BATCH = 16
EPOCHS = 2


def main(out_path):
    keras.utils.set_random_seed(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.random((128, 8)).astype("float32")
    y = rng.integers(0, 3, 128)
    with strategy.scope():
        model = kp.prune_low_magnitude(
            keras.Sequential(
                [
                    keras.Input((8,)),
                    keras.layers.Dense(16, activation="relu"),
                    keras.layers.Dense(3),
                ]
            ),
            kp.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2),
        )
        optimizer = keras.optimizers.Adam(0.01)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="sum"
        )

    @tf.function
    def train_step(x_batch, y_batch):
        def replica_step(x_batch, y_batch):
            with tf.GradientTape() as tape:
                logits = model(x_batch, training=True)
                loss = loss_fn(y_batch, logits) / GLOBAL_BATCH
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(gradients, model.trainable_variables)

        strategy.run(replica_step, (x_batch, y_batch))

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    )
    callback = kp.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(EPOCHS):
        for batch, (x_batch, y_batch) in enumerate(dataset):
            callback.on_train_batch_begin(batch)
            train_step(x_batch, y_batch)
        callback.on_epoch_end(epoch)
    callback.on_train_end()

    wrappers = kp.pruning_wrappers(model)
    arrays = {}
    for i, wrapper in enumerate(wrappers):
        arrays[f"mask_{i}"] = keras.ops.convert_to_numpy(wrapper.masks[0])
        arrays[f"masked_{i}"] = wrapper.masked_weights()[0]
    np.savez(out_path, **arrays)
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "steps": [w.pruning_step for w in wrappers],
                "iterations": int(optimizer.iterations.numpy()),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
