"""Running TFLite files in the real interpreters: LiteRT and TFLite Micro."""

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from keras_pruning.export._deps import require
from keras_pruning.export._flatbuffer import model_info
from keras_pruning.schedules import _check_int

RUNTIMES = ("litert", "micro")
_ARENA_ALIGNMENT = 16


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """How a TFLite file's outputs compare with its Keras model's.

    `max_abs_error` and `mean_abs_error` are in output units (int8 outputs are
    dequantized); `argmax_agreement` is the fraction of samples whose argmax
    matches; accuracies are `None` without labels.
    """

    runtime: str
    samples: int
    max_abs_error: float
    mean_abs_error: float
    argmax_agreement: float
    accuracy: float | None
    keras_accuracy: float | None
    invoke_ms: float  # median time of one single-sample invoke


def _quantize(x, details):
    dtype = np.dtype(details["dtype"])
    params = details["quantization_parameters"]
    if dtype.kind == "f" or not len(params["scales"]):  # float, or integer ids
        return x.astype(dtype)
    scale, zero_point = params["scales"][0], params["zero_points"][0]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y, details):
    if np.dtype(details["dtype"]).kind == "f":
        return y.astype("float32")
    params = details["quantization_parameters"]
    scale, zero_point = params["scales"][0], params["zero_points"][0]
    return (y.astype("float32") - zero_point) * scale


class _LiteRT:
    def __init__(self, data, info):
        require("ai_edge_litert")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # The builtin kernels run every file, random-sparse int8 included,
        # where the default XNNPACK delegate fails on some.
        self.interpreter = Interpreter(
            model_content=data,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        self.inputs = [inputs[p] for p in info.input_positions]
        self.outputs = [outputs[p] for p in info.output_positions]
        self.shapes = None  # set, and the tensors allocated, by the first run

    def run(self, sample):
        shapes = [(1, *x.shape) for x in sample]
        if shapes != self.shapes:  # inputs with an unknown axis take each length
            for details, shape in zip(self.inputs, shapes, strict=True):
                # Strict: only the batch and unknown axes may change size.
                self.interpreter.resize_tensor_input(
                    details["index"], list(shape), strict=True
                )
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for details, x in zip(self.inputs, sample, strict=True):
            self.interpreter.set_tensor(details["index"], _quantize(x[None], details))
        start = time.perf_counter()
        self.interpreter.invoke()
        elapsed = time.perf_counter() - start
        outputs = [
            _dequantize(self.interpreter.get_tensor(d["index"]), d)[0]
            for d in self.outputs
        ]
        return outputs, elapsed


class _Micro:
    def __init__(self, data, info, arena_size=None):
        require("tflite_micro")
        from tflite_micro.python.tflite_micro import runtime

        self.interpreter = runtime.Interpreter.from_bytes(
            data, arena_size=arena_size or max(len(data) * 10, 1 << 20)
        )
        self.input_positions = info.input_positions
        self.output_positions = info.output_positions
        self.inputs = [
            self.interpreter.get_input_details(p) for p in info.input_positions
        ]
        self.outputs = [
            self.interpreter.get_output_details(p) for p in info.output_positions
        ]

    def run(self, sample):
        for p, details, x in zip(
            self.input_positions, self.inputs, sample, strict=True
        ):
            self.interpreter.set_input(_quantize(x[None], details), p)
        start = time.perf_counter()
        self.interpreter.invoke()
        elapsed = time.perf_counter() - start
        outputs = [
            _dequantize(np.asarray(self.interpreter.get_output(p)), d)[0]
            for p, d in zip(self.output_positions, self.outputs, strict=True)
        ]
        return outputs, elapsed


def _interpreter(data, runtime):
    if runtime not in RUNTIMES:
        raise ValueError(
            f"`runtime` must be one of {RUNTIMES}. Received: runtime={runtime!r}"
        )
    info = model_info(data, "tflite_bytes")
    if runtime == "micro" and info.sparse_tensors:
        raise ValueError(
            "TensorFlow Lite Micro cannot run TFLite sparse tensors (it has no "
            "DENSIFY, and block-sparse files crash in Invoke); refusing to run "
            f"{len(info.sparse_tensors)} sparse tensors. Export with "
            "to_tflite(..., target='micro'). Received: a sparse-encoded file"
        )
    return _LiteRT(data, info) if runtime == "litert" else _Micro(data, info)


def _as_inputs(x, name="x"):
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if not arrays or not all(isinstance(a, np.ndarray) for a in arrays):
        raise TypeError(
            f"`{name}` must be a NumPy array (or a list of arrays, one per model "
            f"input). Received: {name} of type {type(x).__name__}"
        )
    if len({a.shape[0] for a in arrays}) != 1 or arrays[0].shape[0] == 0:
        raise ValueError(
            f"`{name}` must hold at least one sample, with the same number of "
            f"samples for every input. Received: shapes {[a.shape for a in arrays]}"
        )
    if any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in arrays):
        raise ValueError(
            f"`{name}` must hold finite numbers: NaN or infinity has no int8 "
            "value, and makes errors and agreement meaningless. Received: NaN "
            "or infinity"
        )
    # Integer inputs (token ids) stay integers; the rest is quantized from float32.
    return [a if a.dtype.kind in "iu" else a.astype("float32") for a in arrays]


def run(tflite_bytes, x, *, runtime="litert"):
    """Runs a TFLite file sample by sample in a real interpreter.

    Args:
        tflite_bytes: the file's bytes.
        x: inputs, an array (or a list of arrays, one per model input, in
            the model's order), batch first. Quantized inputs are quantized
            with the file's input scale and zero point; integer inputs (token
            ids) are passed as they are. Inputs and outputs are matched to the
            file's by their signature names, whatever order the converter
            gave them; an unknown axis takes each sample's length (LiteRT).
        runtime: `"litert"` (ai-edge-litert, builtin kernels) or `"micro"`
            (the TensorFlow Lite Micro Python runtime).

    Returns:
        `(outputs, invoke_seconds)`: the first output, dequantized, stacked
        over samples; and the time of each invoke.
    """
    inputs = _as_inputs(x)
    interpreter = _interpreter(tflite_bytes, runtime)
    outputs, times = [], []
    for i in range(inputs[0].shape[0]):
        result, elapsed = interpreter.run([a[i] for a in inputs])
        outputs.append(result[0])
        times.append(elapsed)
    return np.stack(outputs), times


def verify(tflite_bytes, model, x, *, y=None, runtime="litert"):
    """Runs a TFLite file in the real interpreter and compares it with Keras.

    Args:
        tflite_bytes: the file's bytes.
        model: the Keras model it was exported from.
        x: inputs (float, batch first).
        y: optional integer labels, for accuracy.
        runtime: `"litert"` or `"micro"`. Defaults to `"litert"`.

    Returns:
        A `VerifyResult`.

    Raises:
        ValueError: for a truncated or corrupt file, a sparse file given to the
            micro runtime, or inputs that do not match.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model of type {type(model).__name__}"
        )
    inputs = _as_inputs(x)
    actual, times = run(tflite_bytes, inputs, runtime=runtime)
    expected = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    if isinstance(expected, (list, tuple)):
        expected = expected[0]
    expected = np.asarray(keras.ops.convert_to_numpy(expected))
    if expected.shape != actual.shape:
        raise ValueError(
            f"The file's output shape {actual.shape} differs from the model's "
            f"{expected.shape}: `model` is not the model this file was exported from."
        )
    error = np.abs(actual - expected)
    accuracy = keras_accuracy = None
    if y is not None:
        labels = np.asarray(y).reshape(-1)
        if labels.shape[0] != actual.shape[0]:
            raise ValueError(
                f"`y` must hold one label per sample ({actual.shape[0]}). "
                f"Received: {labels.shape[0]} labels"
            )
        accuracy = float(np.mean(actual.argmax(-1) == labels))
        keras_accuracy = float(np.mean(expected.argmax(-1) == labels))
    return VerifyResult(
        runtime=runtime,
        samples=int(actual.shape[0]),
        max_abs_error=float(error.max()),
        mean_abs_error=float(error.mean()),
        argmax_agreement=float(np.mean(actual.argmax(-1) == expected.argmax(-1))),
        accuracy=accuracy,
        keras_accuracy=keras_accuracy,
        invoke_ms=1000 * statistics.median(times),
    )


_ARENA_PROBE = """
import sys
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
alt = int(sys.argv[2])
for line in sys.stdin:
    size = int(line)
    try:
        runtime.Interpreter.from_bytes(data, arena_size=size, alt_decompression_memory_size=alt)
        print("ok", flush=True)
    except Exception:
        print("no", flush=True)
"""


class _ArenaProbe:
    """Tries arena sizes in a child process: TFLite Micro sometimes crashes,
    rather than raising, when an arena is too small. A crash counts as "does
    not fit", and a new child takes over."""

    def __init__(self, path, alt_decompression_memory_size):
        self.args = [
            sys.executable,
            "-c",
            _ARENA_PROBE,
            path,
            str(alt_decompression_memory_size),
        ]
        self.child = None

    def fits(self, size):
        if self.child is None:
            self.child = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        try:
            self.child.stdin.write(f"{size}\n")
            self.child.stdin.flush()
            answer = self.child.stdout.readline().strip()
        except BrokenPipeError:
            answer = ""
        if answer not in ("ok", "no"):  # the child crashed
            self.close()
            return False
        return answer == "ok"

    def close(self):
        if self.child is not None:
            self.child.kill()
            self.child.wait()
            self.child = None


def min_arena_bytes(tflite_bytes, *, alt_decompression_memory_size=0):
    """The smallest TFLite Micro tensor arena that runs the file, in bytes.

    Bisects `arena_size` (to a multiple of 16) over
    `tflite_micro.runtime.Interpreter`, which fails to allocate when the arena
    is too small. The probes run in a child process, because some too-small
    arenas crash the runtime instead. The result is checked with one invoke.
    """
    info = model_info(tflite_bytes, "tflite_bytes")
    _check_int(
        "alt_decompression_memory_size", alt_decompression_memory_size, minimum=0
    )
    require("tflite_micro")
    with tempfile.TemporaryDirectory(prefix="keras-pruning-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(bytes(tflite_bytes))
        probe = _ArenaProbe(path, alt_decompression_memory_size)
        try:
            high = _ARENA_ALIGNMENT * 64
            while not probe.fits(high):
                high *= 2
                if high > 1 << 31:
                    raise ValueError(
                        "No arena up to 2 GiB runs this file in TensorFlow Lite Micro."
                    )
            low = 0
            while high - low > _ARENA_ALIGNMENT:
                middle = (low + high) // 2 // _ARENA_ALIGNMENT * _ARENA_ALIGNMENT
                if middle <= low:
                    break
                if probe.fits(middle):
                    high = middle
                else:
                    low = middle
        finally:
            probe.close()
    micro = _Micro(bytes(tflite_bytes), info, arena_size=high)
    micro.run([np.zeros(d["shape"][1:], "float32") for d in micro.inputs])
    return high
