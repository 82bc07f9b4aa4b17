"""An MNIST-style CNN pruned to 80% with PolynomialDecay, on Fashion-MNIST.

    python examples/mnist_cnn_polynomial_decay.py
    python examples/mnist_cnn_polynomial_decay.py --train-samples 60000 --epochs 4

Trains a small CNN for an epoch, then prunes its convolution and Dense kernels
from 0% to 80% sparsity while fine-tuning, strips the wrappers, and compares
accuracy and compressed size with the dense model.
"""

import argparse
import gzip
import math

import keras
import numpy as np

import keras_pruning as kp
from keras_pruning.datasets import fashion_mnist


def build_cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="cnn",
    )


def gzipped_weight_bytes(model):
    """All weights, gzipped: what pruning saves on disk and over the air."""
    raw = b"".join(np.asarray(weight).tobytes() for weight in model.get_weights())
    return len(gzip.compress(raw, compresslevel=9))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=12_000)
    parser.add_argument("--test-samples", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=2, help="pruning epochs")
    parser.add_argument("--final-sparsity", type=float, default=0.8)
    parser.add_argument(
        "--data", default=None, help="folder with the Fashion-MNIST .gz files"
    )
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(args.data)
    x_train, y_train = (
        x_train[: args.train_samples, ..., None],
        y_train[: args.train_samples],
    )
    x_test, y_test = x_test[: args.test_samples, ..., None], y_test[: args.test_samples]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model = build_cnn()
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=args.verbose)
    dense_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    dense_bytes = gzipped_weight_bytes(model)

    steps_per_epoch = math.ceil(len(x_train) / 64)
    end_step = steps_per_epoch * max(1, args.epochs - 1)
    schedule = kp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=args.final_sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=max(1, end_step // 10),
    )
    pruned = kp.prune_low_magnitude(model, schedule)
    pruned.compile(keras.optimizers.Adam(3e-4), loss, metrics=["accuracy"])
    pruned.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        verbose=args.verbose,
        callbacks=[kp.UpdatePruningStep()],
    )

    final = kp.strip_pruning(pruned)
    final.compile(loss=loss, metrics=["accuracy"])
    pruned_accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
    for row in kp.sparsity_report(final):
        print(
            f"{row.weight:<32} {row.nonzeros:>7,} / {row.size:>7,} kept  {row.sparsity:.1%} sparse"
        )
    print(f"test accuracy: dense {dense_accuracy:.2%}, pruned {pruned_accuracy:.2%}")
    print(
        f"gzipped weights: dense {dense_bytes:,} B, pruned {gzipped_weight_bytes(final):,} B"
    )
    return final, dense_accuracy, pruned_accuracy


if __name__ == "__main__":
    main()
