"""Keras model -> TFLite flatbuffer, for LiteRT or TensorFlow Lite Micro."""

import itertools
import tempfile

import keras
import numpy as np

from keras_pruning._files import check_overwrite, check_path, write_atomic
from keras_pruning.export._deps import require
from keras_pruning.export._flatbuffer import model_info
from keras_pruning.prune import pruning_wrappers, strip_pruning

QUANTIZE_MODES = (None, "dynamic", "float16", "int8")
TARGETS = ("litert", "micro")
# TFLM has int8 kernels and float kernels, but no hybrid ("dynamic") kernels
# and no float16 weights.
_MICRO_QUANTIZE_MODES = (None, "int8")
_CALIBRATION_SAMPLES = 200


def _validate(model, quantize, representative_data, target, sparse, path, overwrite):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model (pruned or not). "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"`quantize` must be one of {QUANTIZE_MODES}. Received: quantize={quantize!r}"
        )
    if target not in TARGETS:
        raise ValueError(
            f"`target` must be one of {TARGETS}. Received: target={target!r}"
        )
    if not isinstance(sparse, bool):
        raise TypeError(f"`sparse` must be True or False. Received: sparse={sparse!r}")
    if sparse and target == "micro":
        raise ValueError(
            "`sparse=True` writes TFLite's sparse tensor encoding, which TensorFlow "
            "Lite Micro cannot run (it has no DENSIFY, and block-sparse files crash "
            "in Invoke). For a microcontroller, export with sparse=False and "
            "compress the file with compress_for_micro(). "
            "Received: sparse=True, target='micro'"
        )
    if target == "micro" and quantize not in _MICRO_QUANTIZE_MODES:
        raise ValueError(
            f"TensorFlow Lite Micro runs float32 or full-integer int8 models; "
            f"`quantize` must be one of {_MICRO_QUANTIZE_MODES} for target='micro'. "
            f"Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data` to calibrate activation "
            "ranges: an array of inputs, a tf.data.Dataset, or a generator. "
            "Received: representative_data=None"
        )
    check_overwrite([] if path is None else [check_path(path)], overwrite)
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"Model {model.name!r} has no known inputs: build it from keras.Input "
            "(a Sequential or functional model) before exporting. "
            f"Received: model={model.name!r}"
        )


def _samples(representative_data, num_inputs):
    """Yields one input sample at a time (without batch axis), as a list."""
    import tensorflow as tf

    if isinstance(representative_data, np.ndarray):
        source = ([x] for x in representative_data)
    elif isinstance(representative_data, (list, tuple)) and all(
        isinstance(x, np.ndarray) for x in representative_data
    ):
        source = (list(xs) for xs in zip(*representative_data, strict=True))
    elif isinstance(representative_data, tf.data.Dataset):
        source = _unbatch_dataset(representative_data, num_inputs)
    elif callable(representative_data) or hasattr(representative_data, "__next__"):
        items = (
            representative_data()
            if callable(representative_data)
            else representative_data
        )
        source = _unbatch_items(items)
    else:
        raise TypeError(
            "`representative_data` must be a NumPy array (or a list of arrays, one "
            "per model input), a tf.data.Dataset, or a generator of input batches. "
            f"Received: representative_data of type {type(representative_data).__name__}"
        )
    return source


def _unbatch_items(items):
    for item in items:
        if isinstance(item, dict):
            raise TypeError(
                "`representative_data` must yield arrays or lists of arrays, not dicts. "
                "Received: a dict"
            )
        arrays = list(item) if isinstance(item, (list, tuple)) else [item]
        arrays = [np.asarray(a) for a in arrays]
        for i in range(arrays[0].shape[0]):
            yield [a[i] for a in arrays]


def _unbatch_dataset(dataset, num_inputs):
    def items():
        for element in dataset.as_numpy_iterator():
            # (inputs, labels) pairs: keep the inputs. A pair of arrays is
            # (x, y) for a model of one input, two inputs for a model of two.
            if (
                isinstance(element, tuple)
                and len(element) == 2
                and (isinstance(element[0], (tuple, list)) or num_inputs == 1)
            ):
                element = element[0]
            yield element

    return _unbatch_items(items())


def _fits(shape, expected):
    """Whether `shape` is `expected`, where an unknown (`None`) axis fits any."""
    return len(shape) == len(expected) and all(
        e is None or e == n for n, e in zip(shape, expected, strict=True)
    )


def _calibration(representative_data, specs):
    samples = list(
        itertools.islice(
            _samples(representative_data, len(specs)), _CALIBRATION_SAMPLES
        )
    )
    if not samples:
        raise ValueError(
            "`representative_data` yielded no samples. Received: an empty source"
        )
    expected = [tuple(spec.shape[1:]) for spec in specs]
    got = [tuple(np.shape(x)) for x in samples[0]]
    if len(got) != len(expected) or not all(map(_fits, got, expected)):
        raise ValueError(
            f"`representative_data` samples must have the model's input shapes "
            f"{expected} (without the batch axis). Received: shapes {got}"
        )
    for index, sample in enumerate(samples):
        for x in sample:
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
                raise ValueError(
                    "`representative_data` must hold finite numbers: int8 "
                    "scales are set from their range (the converter crashes on "
                    "infinity and keeps float32 for NaN). Received: NaN or "
                    f"infinity in sample {index}"
                )

    def dataset():
        # By signature input name: the converter may order inputs otherwise.
        for sample in samples:
            yield {
                spec.name: np.asarray(x, dtype=spec.dtype.as_numpy_dtype)[None]
                for x, spec in zip(sample, specs, strict=True)
            }

    return dataset


def to_tflite(
    model,
    *,
    quantize=None,
    representative_data=None,
    target="litert",
    sparse=False,
    path=None,
    overwrite=False,
):
    """Converts a (pruned) Keras model to a TFLite flatbuffer.

    Pruning wrappers are stripped first (`w * mask` written into the layers).

    Args:
        model: a Sequential or functional `keras.Model` built from `keras.Input`.
        quantize: `None` (float32), `"dynamic"` (int8 weights, float
            activations), `"float16"` (float16 weights) or `"int8"` (full
            integer, int8 input and output). Defaults to `None`.
        representative_data: calibration inputs for `"int8"`: an array (or a
            list of arrays, one per input), a `tf.data.Dataset` of inputs or
            `(inputs, labels)` (for a model of two inputs, a pair of arrays is
            its two inputs), or a generator of batches. The first 200
            samples are used, fed to the file's inputs by name.
        target: `"litert"` (dynamic batch) or `"micro"` (TensorFlow Lite
            Micro: batch 1, builtin ops only, no sparse tensors; float32 or
            int8). Defaults to `"litert"`.
        sparse: store weights with TFLite's sparse encoding
            (`Optimize.EXPERIMENTAL_SPARSITY`), for LiteRT only. Note that the
            converter's random-sparse int8 encoding can be larger than dense.
            Defaults to `False`.
        path: if given, the file is also written there, atomically.
        overwrite: with `path`, replace an existing file. Defaults to `False`.

    Returns:
        The flatbuffer, as bytes.

    Raises:
        TypeError, ValueError: for invalid arguments, naming the argument
            (NaN or infinity in int8 calibration data; a recurrent layer
            that runs as a loop in an int8 TFLite Micro file).
        FileExistsError: if `path` exists and `overwrite` is False.
        RuntimeError: on a Keras backend other than TensorFlow (save the
            model, load it with `KERAS_BACKEND=tensorflow`, export), if the
            converter fails (or gives an `"int8"` request non-int8 inputs or
            outputs), or if TFLite Micro cannot load a `target="micro"` file.

    Examples:
        >>> data = to_tflite(pruned, quantize="int8", representative_data=x[:200],
        ...                  target="micro", path="model.tflite")
    """
    _validate(model, quantize, representative_data, target, sparse, path, overwrite)
    _require_tensorflow_backend()
    require("tensorflow")
    import tensorflow as tf

    plain = strip_pruning(model) if pruning_wrappers(model) else model
    if target == "micro" and quantize == "int8":
        _check_no_recurrent_loop(plain)
    plain = _float32_compute(plain)
    batch = 1 if target == "micro" else None
    specs = [
        tf.TensorSpec(
            (batch, *tuple(t.shape[1:])), tf.as_dtype(t.dtype), name=f"input_{i}"
        )
        for i, t in enumerate(plain.inputs)
    ]
    calibration = (
        _calibration(representative_data, specs) if quantize == "int8" else None
    )

    with tempfile.TemporaryDirectory(prefix="keras-pruning-") as saved_model:
        _export_inference_saved_model(plain, specs, saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        data = _convert(converter, quantize, sparse, calibration, model.name)
    if quantize == "int8" or target == "micro":
        info = model_info(data)  # read once for both checks
    if quantize == "int8":
        _check_int8(info, specs, plain.outputs, model.name)
    if target == "micro":
        _check_micro(data, info)
    if path is not None:
        write_atomic(path, data, overwrite=overwrite)
    return data


def _check_no_recurrent_loop(model):
    """ValueError for a recurrent layer that runs as a loop: TensorFlow's
    converter crashes the Python process (a segmentation fault, TensorFlow
    2.21) when it calibrates such a loop for an int8 TFLite Micro file."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.RNN) and not layer.unroll:
            raise ValueError(
                "An int8 TFLite Micro file cannot hold a recurrent layer that "
                "runs as a loop: TensorFlow's converter crashes the process "
                "while calibrating it. Build the layer with `unroll=True` (and a "
                "fixed sequence length), or export float32 for TFLite Micro. "
                f"Received: layer {layer.name!r} of class {type(layer).__name__}"
            )


def _is_mixed(policy):
    return (
        policy.compute_dtype != policy.variable_dtype and not policy.quantization_mode
    )


def _float32_policies(config):
    """`config` with every mixed precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(
            config.get("config", {}).get("name")
        ).startswith("mixed_"):
            return "float32"
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def _float32_compute(model):
    """`model`, or a float32 copy of it if a layer computes in float16 or
    bfloat16 under a mixed precision policy (`mixed_float16`,
    `mixed_bfloat16`). Its variables are float32 already; the converter has
    no builtin float16/bfloat16 kernels (`quantize="float16"` stores float16
    weights instead)."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    if not any(_is_mixed(layer.dtype_policy) for layer in layers):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _require_tensorflow_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            "Export to TFLite runs the TensorFlow converter and needs the "
            "TensorFlow backend. Save the model (`model.save('pruned.keras')`), "
            "then load and export it in a process started with "
            f"KERAS_BACKEND=tensorflow. Received: keras.backend.backend()={backend!r}"
        )


def _export_inference_saved_model(model, specs, path):
    """Writes a SavedModel whose `serve` calls `model(inputs, training=False)`.

    `model.export()` calls the model without `training`; then a layer whose
    `call` defaults to `training=True` (Keras's image preprocessing layers,
    such as `Resizing`) sets it for every later layer, and BatchNormalization
    would be exported in training mode.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda inputs: model(inputs, training=False),
        input_signature=[specs[0] if len(specs) == 1 else specs],
    )
    archive.write_out(path, verbose=False)


def _convert(converter, quantize, sparse, calibration, name):
    import tensorflow as tf

    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return bytes(converter.convert())
    except Exception as error:
        raise RuntimeError(
            f"The TFLite converter failed for model {name!r}: {error}"
        ) from error


def _check_int8(info, specs, outputs, name):
    """RuntimeError unless the float inputs and float outputs of a
    full-integer file (its `ModelInfo`) are int8, as the converter was asked
    (integer ones, token ids or class ids, stay integers)."""
    floats = [spec.dtype.is_floating for spec in specs] + [
        keras.backend.is_float_dtype(tensor.dtype) for tensor in outputs
    ]
    types = info.input_types + info.output_types
    if any(f and t != "INT8" for t, f in zip(types, floats, strict=True)):
        raise RuntimeError(
            f"The TFLite converter did not quantize model {name!r} to int8: its "
            f"inputs are {list(info.input_types)} and its outputs "
            f"{list(info.output_types)}."
        )


def _check_micro(data, info):
    if info.sparse_tensors:
        raise RuntimeError(
            f"The converter produced sparse tensors {info.sparse_tensors}, which "
            "TensorFlow Lite Micro cannot run."
        )
    from tflite_micro.python.tflite_micro import runtime

    try:
        runtime.Interpreter.from_bytes(data, arena_size=max(len(data) * 10, 1 << 20))
    except Exception as error:
        raise RuntimeError(
            f"TensorFlow Lite Micro cannot load the converted file (ops: "
            f"{', '.join(info.operators)}): {error}"
        ) from error
