"""Pruning in a custom training loop (TensorFlow backend, `tf.GradientTape`).

    python examples/custom_training_loop.py

`fit()` drives `UpdatePruningStep` for you. In your own loop, call
`set_model` and `on_train_begin` once, `on_train_batch_begin` before every
step, and `on_train_end` at the end; the callback does the rest (step
counting, mask updates between steps).
"""

import argparse
import math

import keras
import numpy as np
import tensorflow as tf

import keras_pruning as kp
from keras_pruning.datasets import fashion_mnist


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=8_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--data", default=None, help="folder with the Fashion-MNIST .gz files"
    )
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(args.data)
    x_train = x_train[: args.train_samples].reshape(-1, 784).astype("float32") / 255
    y_train = y_train[: args.train_samples].astype("int32")
    x_test = x_test.reshape(-1, 784).astype("float32") / 255

    batch_size = 64
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    schedule = kp.PolynomialDecay(
        0.0,
        0.9,
        begin_step=0,
        end_step=steps_per_epoch * max(1, args.epochs - 1),
        frequency=50,
    )
    pruned = kp.prune_low_magnitude(model, schedule)
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=0)
        .batch(batch_size)
    )

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, pruned(x, training=True))
        gradients = tape.gradient(loss, pruned.trainable_variables)
        optimizer.apply_gradients(
            zip(gradients, pruned.trainable_variables, strict=True)
        )
        return loss

    step_callback = kp.UpdatePruningStep()
    step_callback.set_model(pruned)
    step_callback.on_train_begin()
    for epoch in range(args.epochs):
        for batch, (x, y) in enumerate(dataset):
            step_callback.on_train_batch_begin(batch)
            loss = train_step(x, y)
        print(f"epoch {epoch + 1}: loss {float(loss):.4f}")
    step_callback.on_train_end()

    final = kp.strip_pruning(pruned)
    accuracy = float(np.mean(final.predict(x_test, verbose=0).argmax(-1) == y_test))
    sparsity = {row.weight: row.sparsity for row in kp.sparsity_report(final)}
    for weight, value in sparsity.items():
        print(f"{weight}: {value:.1%} sparse")
    print(f"test accuracy: {accuracy:.2%}")
    return final, accuracy, sparsity


if __name__ == "__main__":
    main()
