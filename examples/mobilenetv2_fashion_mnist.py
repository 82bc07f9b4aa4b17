"""Case study: MobileNetV2 on Fashion-MNIST, the head pruned from 0% to 50%.

1. Build MobileNetV2 (no top) with a head GlobalAveragePooling -> Dense(128)
   -> Dropout -> Dense(10, softmax). Raw 28x28x1 pixels (0..255) go in: the
   model resizes, rescales to [-1, 1] and tiles them to 3 channels itself, so
   the exported files take raw images too.
2. Train the dense baseline; measure accuracy, size and inference time.
3. Prune the head's Dense kernels with PolynomialDecay(0 -> 50%) while
   fine-tuning, then strip the wrappers.
4. Export an int8 LiteRT file, an int8 TensorFlow Lite Micro file, its
   `compress_for_micro` twin and C source; run them in the real interpreters.
5. Write `report.json`, `report.md` and two plots under `--out`.

    python examples/mobilenetv2_fashion_mnist.py --preset quick
    python examples/mobilenetv2_fashion_mnist.py --preset full
    python examples/mobilenetv2_fashion_mnist.py --weights imagenet  # needs internet

With `--weights none` (the default: no download) the whole network trains from
scratch; with `--weights imagenet` the base is frozen (transfer learning) and
only the head trains.
"""

import argparse
import dataclasses
import gzip
import io
import json
import math
import os
import sys
import time

import keras
import numpy as np

import keras_pruning as kp
from keras_pruning import export
from keras_pruning.datasets import fashion_mnist

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
HEAD_LAYERS = ("head_dense", "classifier")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on. `None` sizes mean "all of the split"."""

    preset: str = "quick"
    weights: str = "none"
    alpha: float = 0.35
    image_size: int = 32
    train_samples: int | None = 12_000
    test_samples: int | None = 2_000
    epochs: int = 3
    prune_epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 1e-3
    final_sparsity: float = 0.5
    prune_layers: str = "head"
    micro_samples: int = 500
    dense_control: bool = True
    seed: int = 0
    data: str | None = None
    out: str = os.path.join("artifacts", "case_study")
    verbose: int = 1


PRESETS = {
    # For tests and the notebook's smoke run: seconds, not accuracy.
    "tiny": dict(
        train_samples=512,
        test_samples=256,
        epochs=1,
        prune_epochs=1,
        micro_samples=32,
        dense_control=False,
    ),
    # `make demo`: a few minutes on 2 CPU cores.
    "quick": dict(train_samples=12_000, test_samples=2_000, epochs=3, prune_epochs=2),
    # The numbers in the docs: all of Fashion-MNIST.
    "full": dict(
        train_samples=None,
        test_samples=None,
        epochs=12,
        prune_epochs=4,
        micro_samples=1_000,
    ),
}
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


def make_config(preset="quick", **overrides):
    """A `Config` from a preset name and overrides (`None` overrides are ignored)."""
    if preset not in PRESETS:
        raise ValueError(
            f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}"
        )
    values = {
        **PRESETS[preset],
        **{k: v for k, v in overrides.items() if v is not None},
    }
    if values.get("weights") == "imagenet" and "image_size" not in overrides:
        values["image_size"] = 96  # the smallest size with ImageNet weights
    config = Config(preset=preset, **values)
    _check(config)
    return config


def _check(config):
    if config.weights not in ("none", "imagenet"):
        raise ValueError(
            f"`weights` must be 'none' or 'imagenet'. Received: weights={config.weights!r}"
        )
    if config.prune_layers not in ("head", "all"):
        raise ValueError(
            f"`prune_layers` must be 'head' or 'all'. Received: prune_layers={config.prune_layers!r}"
        )
    if config.image_size < 32:
        raise ValueError(
            f"`image_size` must be at least 32 (MobileNetV2's minimum). Received: image_size={config.image_size}"
        )
    if config.weights == "imagenet" and (
        config.alpha not in IMAGENET_ALPHAS or config.image_size not in IMAGENET_SIZES
    ):
        raise ValueError(
            f"ImageNet weights exist for alpha in {IMAGENET_ALPHAS} and image_size in "
            f"{IMAGENET_SIZES}. Received: alpha={config.alpha}, image_size={config.image_size}"
        )
    if not 0.0 <= config.final_sparsity < 1.0:
        raise ValueError(
            f"`final_sparsity` must be in [0, 1). Received: final_sparsity={config.final_sparsity}"
        )
    for name in ("epochs", "prune_epochs", "batch_size", "micro_samples"):
        if getattr(config, name) < 1:
            raise ValueError(
                f"`{name}` must be at least 1. Received: {name}={getattr(config, name)}"
            )


def load_data(config):
    """Fashion-MNIST as float32 images `(n, 28, 28, 1)` in 0..255 and int labels."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist(config.data)
    rng = np.random.default_rng(config.seed)
    train = rng.permutation(len(x_train))[: config.train_samples]
    test = rng.permutation(len(x_test))[: config.test_samples]

    def prepare(x, y, index):
        return x[index, :, :, None].astype("float32"), y[index].astype("int32")

    return prepare(x_train, y_train, train), prepare(x_test, y_test, test)


def build_model(config):
    """MobileNetV2 without its top, and the case study's head."""
    frozen = config.weights == "imagenet"
    images = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Resizing(config.image_size, config.image_size, name="resize")(
        images
    )
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(x)
    x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
    base = keras.applications.MobileNetV2(
        input_shape=(config.image_size, config.image_size, 3),
        include_top=False,
        weights="imagenet" if frozen else None,
        alpha=config.alpha,
    )
    if frozen:
        base.trainable = False
    else:
        # Keras's MobileNetV2 averages batch statistics with momentum 0.999,
        # made for fine-tuning; from scratch on a short run the moving means
        # lag far behind, and inference accuracy with them.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(x, training=False) if frozen else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(128, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(0.2, name="head_dropout")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(images, outputs, name="mobilenetv2_fashion_mnist")


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def pruning_schedule(config, steps_per_epoch):
    """PolynomialDecay from 0% to `final_sparsity`, reached one epoch before the
    end so that the last epoch recovers at the final sparsity."""
    end_step = steps_per_epoch * max(1, config.prune_epochs - 1)
    return kp.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=config.final_sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=max(1, min(100, end_step // 10)),
    )


def prune(model, config, schedule):
    """Wraps the layers to prune: the head's Dense layers, or every supported layer."""
    if config.prune_layers == "all":
        return kp.prune_low_magnitude(model, schedule)

    def wrap_head(layer):  # TFMOT's idiom, unchanged
        if layer.name in HEAD_LAYERS:
            return kp.prune_low_magnitude(layer, schedule)
        return layer

    return keras.models.clone_model(model, clone_function=wrap_head)


def accuracy(model, x, y, batch_size=256):
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(predictions.argmax(-1) == y))


def ms_per_sample(models, x, batch_size=256, repeats=5):
    """Keras inference time per sample of each model in `models` (a dict), as
    the median of `repeats` passes over `x`, interleaved so that the machine's
    noise hits every model alike."""
    for model in models.values():
        model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm up
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.predict(x, batch_size=batch_size, verbose=0)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) / len(x) for name, t in times.items()}


def nonzero_parameters(model):
    return int(
        sum(np.count_nonzero(keras.ops.convert_to_numpy(w)) for w in model.weights)
    )


def save_for_inference(model, path):
    """Saves architecture and weights without optimizer state, like the
    stripped model (which is not compiled), so the files compare like for like."""
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    export.save_model(copy, path, overwrite=True)


def _gzip_bytes(path):
    with open(path, "rb") as file:
        return len(gzip.compress(file.read(), compresslevel=9))


def export_all(model, train, test, config):
    """Writes the LiteRT and micro files and C source, and verifies them in the
    real interpreters on `config.micro_samples` test images. Returns
    `(files, micro, litert, seconds)` for the report."""
    start = time.perf_counter()
    out = config.out
    calibration = train[0][:200]
    x_eval, y_eval = (a[: config.micro_samples] for a in test)
    litert = export.to_tflite(
        model,
        quantize="int8",
        representative_data=calibration,
        path=os.path.join(out, "model_litert_int8.tflite"),
        overwrite=True,
    )
    micro = export.to_tflite(
        model,
        quantize="int8",
        representative_data=calibration,
        target="micro",
        path=os.path.join(out, "model_micro_int8.tflite"),
        overwrite=True,
    )
    compressed, compression = export.compress_for_micro(micro)
    export.write_atomic(
        os.path.join(out, "model_micro_int8_compressed.tflite"),
        compressed,
        overwrite=True,
    )
    c_source = export.write_c_source(
        compressed, os.path.join(out, "model_micro"), name="fashion", overwrite=True
    )
    micro_check = export.verify(compressed, model, x_eval, y=y_eval, runtime="micro")
    litert_check = export.verify(litert, model, x_eval, y=y_eval, runtime="litert")
    written = [
        "dense.keras",
        "pruned.keras",
        "model_litert_int8.tflite",
        "model_micro_int8.tflite",
        "model_micro_int8_compressed.tflite",
        *(os.path.basename(path) for path in c_source),
    ]
    files = {name: os.path.getsize(os.path.join(out, name)) for name in written}
    micro_report = {
        "bytes": len(micro),
        "compressed_bytes": len(compressed),
        "compressed_tensors": len(compression.tensors),
        "arena_bytes": export.min_arena_bytes(compressed),
        "max_abs_error": micro_check.max_abs_error,
        "argmax_agreement": micro_check.argmax_agreement,
        "accuracy": micro_check.accuracy,
        "invoke_ms": micro_check.invoke_ms,
        "samples": micro_check.samples,
    }
    litert_report = {
        "bytes": len(litert),
        "max_abs_error": litert_check.max_abs_error,
        "argmax_agreement": litert_check.argmax_agreement,
        "accuracy": litert_check.accuracy,
        "invoke_ms": litert_check.invoke_ms,
    }
    return files, micro_report, litert_report, time.perf_counter() - start


def train_dense(config, train, test):
    """Builds and trains the dense baseline, saves `dense.keras`, and measures it."""
    (x_train, y_train), (x_test, y_test) = train, test
    model = build_model(config)
    compile_model(model, config.learning_rate)
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        verbose=config.verbose,
    )
    stats = {
        "train_s": time.perf_counter() - start,
        "accuracy": accuracy(model, x_test, y_test),
        "nonzero": nonzero_parameters(model),
    }
    # Saved before pruning, which zeroes weights of the layers it shares.
    save_for_inference(model, os.path.join(config.out, "dense.keras"))
    return model, stats


def finetune_dense_control(config, train, test):
    """The like-for-like control: the saved dense model fine-tuned for the same
    epochs and learning rate as the pruned one, without pruning. Returns its
    test accuracy."""
    (x_train, y_train), (x_test, y_test) = train, test
    control = keras.models.load_model(os.path.join(config.out, "dense.keras"))
    compile_model(control, config.learning_rate / 3)
    control.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.prune_epochs,
        verbose=config.verbose,
    )
    return accuracy(control, x_test, y_test)


def prune_and_finetune(config, model, train, test):
    """Prunes `model` while fine-tuning, strips it, saves `pruned.keras`, and
    measures it. Returns `(pruned, final, stats)`."""
    (x_train, y_train), (x_test, y_test) = train, test
    schedule = pruning_schedule(config, math.ceil(len(x_train) / config.batch_size))
    pruned = prune(model, config, schedule)
    compile_model(pruned, config.learning_rate / 3)
    start = time.perf_counter()
    pruned.fit(
        x_train,
        y_train,
        batch_size=config.batch_size,
        epochs=config.prune_epochs,
        verbose=config.verbose,
        callbacks=[kp.UpdatePruningStep()],
    )
    train_s = time.perf_counter() - start
    final = kp.strip_pruning(pruned)
    export.save_model(final, os.path.join(config.out, "pruned.keras"), overwrite=True)
    wrapped = {w.layer.name for w in kp.pruning_wrappers(pruned)}
    stats = {
        "train_s": train_s,
        "accuracy": accuracy(final, x_test, y_test),
        "nonzero": nonzero_parameters(final),
        "sparsity": {
            row.weight: row.sparsity
            for row in kp.sparsity_report(final)
            if row.layer.split("/")[-1] in wrapped
        },
    }
    return pruned, final, stats


def make_report(config, final, dense, pruned, deployment, test, control_accuracy=None):
    """Assembles `report.json`'s content from the stages' results, and times
    Keras inference of the saved dense and pruned models side by side."""
    files, micro, litert, export_s = deployment
    saved = {
        name: keras.models.load_model(os.path.join(config.out, f"{name}.keras"))
        for name in ("dense", "pruned")
    }
    return {
        "config": dataclasses.asdict(config),
        "dense_accuracy": dense["accuracy"],
        "pruned_accuracy": pruned["accuracy"],
        "accuracy_delta": pruned["accuracy"] - dense["accuracy"],
        # The dense model fine-tuned as long as the pruned one (None if skipped).
        "dense_finetuned_accuracy": control_accuracy,
        "test_samples": len(test[0]),
        "sparsity": pruned["sparsity"],
        "parameters": {
            "total": int(final.count_params()),
            "nonzero_dense": dense["nonzero"],
            "nonzero_pruned": pruned["nonzero"],
        },
        "files": files,
        "gzip_bytes": {
            name: _gzip_bytes(os.path.join(config.out, name))
            for name in ("dense.keras", "pruned.keras")
        },
        "micro": micro,
        "litert": litert,
        "timings": {
            "train_dense_s": dense["train_s"],
            "train_pruned_s": pruned["train_s"],
            "export_s": export_s,
            "keras_ms_per_sample": ms_per_sample(saved, test[0]),
        },
    }


def write_report(report, out):
    """Writes `report.json`, `report.md` and the plots, atomically."""
    export.write_atomic(
        os.path.join(out, "report.json"),
        json.dumps(report, indent=2) + "\n",
        overwrite=True,
    )
    export.write_atomic(
        os.path.join(out, "report.md"), format_markdown(report), overwrite=True
    )
    plot(report, out)


def run(config):
    """Runs the whole case study and returns the report (also written to disk)."""
    keras.utils.set_random_seed(config.seed)
    os.makedirs(config.out, exist_ok=True)
    train, test = load_data(config)
    model, dense = train_dense(config, train, test)
    _, final, pruned = prune_and_finetune(config, model, train, test)
    control = (
        finetune_dense_control(config, train, test) if config.dense_control else None
    )
    deployment = export_all(final, train, test, config)
    report = make_report(config, final, dense, pruned, deployment, test, control)
    write_report(report, config.out)
    return report


def summary_rows(report):
    """`(what, dense, pruned)` rows: the table `make demo` prints."""
    files, gz = report["files"], report["gzip_bytes"]
    params = report["parameters"]
    times = report["timings"]["keras_ms_per_sample"]
    mean_sparsity = float(np.mean(list(report["sparsity"].values())))
    return [
        (
            "test accuracy (Keras)",
            f"{report['dense_accuracy']:.2%}",
            f"{report['pruned_accuracy']:.2%}",
        ),
        *(
            [
                (
                    "  dense, same extra epochs",
                    f"{report['dense_finetuned_accuracy']:.2%}",
                    "",
                )
            ]
            if report["dense_finetuned_accuracy"] is not None
            else []
        ),
        ("pruned-layer sparsity", "0%", f"{mean_sparsity:.1%}"),
        (
            "nonzero parameters",
            f"{params['nonzero_dense']:,}",
            f"{params['nonzero_pruned']:,}",
        ),
        (
            ".keras MB",
            f"{files['dense.keras'] / 1e6:.2f}",
            f"{files['pruned.keras'] / 1e6:.2f}",
        ),
        (
            ".keras gzipped MB",
            f"{gz['dense.keras'] / 1e6:.2f}",
            f"{gz['pruned.keras'] / 1e6:.2f}",
        ),
        ("Keras ms/sample", f"{times['dense']:.3f}", f"{times['pruned']:.3f}"),
    ]


def deployment_rows(report):
    micro, litert = report["micro"], report["litert"]
    return [
        (
            "LiteRT int8 file",
            f"{litert['bytes']:,} B",
            f"{litert['invoke_ms']:.2f} ms/invoke, accuracy {litert['accuracy']:.2%}",
        ),
        ("TFLite Micro int8 file", f"{micro['bytes']:,} B", ""),
        (
            "  compressed for TFLM",
            f"{micro['compressed_bytes']:,} B",
            f"{micro['compressed_tensors']} tensors in DECODE format",
        ),
        (
            "  TFLM arena",
            f"{micro['arena_bytes']:,} B",
            f"{micro['invoke_ms']:.2f} ms/invoke",
        ),
        (
            "  TFLM vs Keras",
            f"{micro['argmax_agreement']:.1%} argmax agreement",
            f"max |error| {micro['max_abs_error']:.4f}, accuracy {micro['accuracy']:.2%}",
        ),
    ]


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_markdown(report):
    config = report["config"]
    lines = [
        "# MobileNetV2 on Fashion-MNIST: head pruned to "
        f"{config['final_sparsity']:.0%}",
        "",
        f"Preset `{config['preset']}`: weights={config['weights']}, alpha={config['alpha']}, "
        f"image size {config['image_size']}, {config['epochs']} dense + "
        f"{config['prune_epochs']} pruning epochs, {report['test_samples']:,} test images.",
        "",
        *_table(("", "dense", "pruned"), summary_rows(report)),
        "",
        "## Sparsity per pruned weight",
        "",
        *_table(
            ("weight", "sparsity"),
            [(k, f"{v:.1%}") for k, v in report["sparsity"].items()],
        ),
        "",
        "## Deployment (pruned model)",
        "",
        *_table(("file", "size", "measured"), deployment_rows(report)),
        "",
        "## Files",
        "",
        *_table(("file", "bytes"), [(k, f"{v:,}") for k, v in report["files"].items()]),
        "",
    ]
    return "\n".join(lines)


def _write_png(figure, path):
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    export.write_atomic(path, buffer.getvalue(), overwrite=True)


def plot(report, out):
    """Writes `sparsity.png` and `before_after.png`, atomically."""
    # Bare Figures, not pyplot: no backend switch in a notebook that calls this.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 0.5 + 0.4 * len(report["sparsity"])))
    axis = figure.subplots()
    names = list(report["sparsity"])
    axis.barh(names, [100 * report["sparsity"][n] for n in names], color="#4c72b0")
    axis.set_xlim(0, 100)
    axis.set_xlabel("sparsity (%)")
    axis.set_title("Sparsity per pruned weight")
    axis.invert_yaxis()
    _write_png(figure, os.path.join(out, "sparsity.png"))

    figure = Figure(figsize=(9, 3.5))
    left, right = figure.subplots(1, 2)
    left.bar(
        ["dense", "pruned"],
        [100 * report["dense_accuracy"], 100 * report["pruned_accuracy"]],
        color=["#999999", "#4c72b0"],
    )
    left.set_ylabel("test accuracy (%)")
    left.set_ylim(0, 100)
    gz = report["gzip_bytes"]
    right.bar(
        ["dense", "pruned"],
        [gz["dense.keras"] / 1e6, gz["pruned.keras"] / 1e6],
        color=["#999999", "#4c72b0"],
    )
    right.set_ylabel(".keras gzipped (MB)")
    figure.suptitle("Before vs after pruning")
    _write_png(figure, os.path.join(out, "before_after.png"))


def print_summary(report, out, stream=sys.stdout):
    rows = [("", "dense", "pruned"), *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ),
            file=stream,
        )
    print(file=stream)
    for name, size, detail in deployment_rows(report):
        print(f"{name:<24} {size:<28} {detail}", file=stream)
    print(f"\nArtifacts: {os.path.abspath(out)}", file=stream)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument(
        "--weights",
        choices=("none", "imagenet"),
        default=None,
        help="'imagenet' downloads pretrained weights and freezes the base",
    )
    parser.add_argument(
        "--alpha", type=float, default=None, help="MobileNetV2 width multiplier"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side the 28x28 images are resized to",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="dense training epochs"
    )
    parser.add_argument(
        "--prune-epochs",
        type=int,
        default=None,
        help="fine-tuning epochs while pruning",
    )
    parser.add_argument("--prune-layers", choices=("head", "all"), default=None)
    parser.add_argument("--final-sparsity", type=float, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument(
        "--data", default=None, help="folder with the Fashion-MNIST .gz files"
    )
    parser.add_argument(
        "--out", default=None, help="artifacts folder (default artifacts/case_study)"
    )
    parser.add_argument(
        "--dense-control",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also fine-tune the dense model as long as the pruned one (off on tiny)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras fit verbosity",
    )
    args = vars(parser.parse_args(argv))
    return make_config(args.pop("preset"), **args)


def main(argv=None):
    config = parse_args(argv)
    report = run(config)
    print_summary(report, config.out)
    return report


if __name__ == "__main__":
    main()
