"""From a pruned Keras model to C source for a microcontroller.

    python examples/export_to_microcontroller.py --out artifacts/micro

Prunes a small CNN to 80% while fine-tuning, exports it as an int8 TensorFlow
Lite Micro file, compresses the pruned weights with TFLM's DECODE operator,
checks both files in the real TFLM runtime (outputs, arena size, latency) and
writes `model.cc`, `model.h` and `model_op_resolver.h`.
"""

import argparse
import math
import os

import keras

import keras_pruning as kp
from keras_pruning import export
from keras_pruning.datasets import fashion_mnist


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=8_000)
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--data", default=None, help="folder with the Fashion-MNIST .gz files"
    )
    parser.add_argument("--out", default=os.path.join("artifacts", "micro"))
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = fashion_mnist(args.data)
    # Raw pixels in, as a camera gives them; the model rescales.
    x_train = x_train[: args.train_samples, ..., None].astype("float32")
    y_train = y_train[: args.train_samples]
    x_test = x_test[: args.test_samples, ..., None].astype("float32")
    y_test = y_test[: args.test_samples]

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    end_step = math.ceil(len(x_train) / 64) * max(1, args.epochs - 1)
    pruned = kp.prune_low_magnitude(
        model,
        kp.PolynomialDecay(0.0, 0.8, 0, end_step, frequency=max(1, end_step // 10)),
    )
    pruned.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        verbose=args.verbose,
        callbacks=[kp.UpdatePruningStep()],
    )
    final = kp.strip_pruning(pruned)

    os.makedirs(args.out, exist_ok=True)
    micro = export.to_tflite(
        final,
        quantize="int8",
        representative_data=x_train[:200],
        target="micro",
        path=os.path.join(args.out, "model.tflite"),
        overwrite=True,
    )
    small, compression = export.compress_for_micro(micro)
    export.write_atomic(
        os.path.join(args.out, "model_compressed.tflite"), small, overwrite=True
    )
    paths = export.write_c_source(
        small, os.path.join(args.out, "model"), name="fashion", overwrite=True
    )

    results = {}
    for name, data in (("plain", micro), ("compressed", small)):
        check = export.verify(data, final, x_test, y=y_test, runtime="micro")
        arena = export.min_arena_bytes(data)
        results[name] = {"bytes": len(data), "arena_bytes": arena, "check": check}
        print(
            f"{name:>10}: {len(data):>9,} B flash, arena {arena:>9,} B, "
            f"{check.invoke_ms:.2f} ms/invoke, accuracy {check.accuracy:.2%}, "
            f"argmax agreement with Keras {check.argmax_agreement:.1%}"
        )
    print(f"compressed tensors: {', '.join(t.name for t in compression.tensors)}")
    print("C source: " + ", ".join(paths))
    return results, paths


if __name__ == "__main__":
    main()
