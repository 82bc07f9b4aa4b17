"""Shrinking TFLite Micro files with TFLM's DECODE operator (PRUNE encoding).

TensorFlow Lite Micro cannot run TFLite's sparse tensors, but its custom
`TFLM_DECODE` operator rebuilds a dense tensor at run time from an encoded
constant and an ancillary constant. `compress_for_micro` re-encodes the pruned
weights of a `.tflite` file that way, using tflite_micro's own compression
machinery (`model_editor`, `decode_insert`) with a PRUNE encoder of our own:
upstream ships the C++ decoder but only a stub encoder. By default it also
strips the strings TFLM never reads (tensor names, signature defs, ...).

PRUNE encoding (decode type 2) of a constant tensor with `n` elements, as read
by TFLM's `kernels/decode.cc`, `kernels/decode_state.h` and
`kernels/decode_state_prune.{h,cc}`:

- the encoded tensor (uint8, `ceil(n / 8)` bytes) is a 1-bit mask over the
  elements in flat (row-major) order, most significant bit first: bit `i` is 1
  when element `i` is kept, 0 when it decodes to the zero point;
- the ancillary tensor (uint8) is a 16-byte header (byte 0: decode type 2,
  byte 1: DCM version 1, bytes 2-3: reserved, byte 4: PRUNE version 1,
  bytes 5-15: reserved) followed by the kept elements, in flat order, in the
  tensor's own little-endian element type.

Masked elements decode to the zero point of the decoded tensor: per channel for
int8 tensors quantized along their first or last axis, otherwise the single
zero point (which the decoder requires to be 0 for every type but int8). The
decoder handles bool, int8, int16, int32, int64 and float32 (copied as 32-bit
patterns, so only +0.0 is masked).
"""

import copy
import dataclasses
import os
import tempfile

import numpy as np

from keras_pruning.export._deps import require
from keras_pruning.export._flatbuffer import model_info

#: Default of `compress_for_micro(min_saving_bytes=...)`.
DEFAULT_MIN_SAVING_BYTES = 64

_METHODS = ("prune", "lut", "auto")
_MAX_LUT_BITS = 7  # the DECODE LUT type indexes with 1 to 7 bits

# DECODE Common Metadata: 16 bytes; byte 4 is the PRUNE format version.
_DCM_VERSION = 1
_PRUNE_VERSION = 1

# Per-element integer views of the types the PRUNE decoder handles, by TFLite
# TensorType name. The decoder copies float32 as int32 bit patterns and bool as
# int8, so the mask compares bit patterns too.
_ELEMENT_VIEWS = {
    "BOOL": np.dtype("<i1"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FLOAT32": np.dtype("<i4"),
}

# Bytes the flatbuffer spends on each new buffer beyond its data: a Buffer
# table and length prefix, plus padding of the data to 16-byte alignment.
_BUFFER_BOOKKEEPING_BYTES = 32

# Metadata the TFLite converter writes for people and tools (a version string
# and a description of the conversion); no interpreter needs it to run a file.
_INFORMATIONAL_METADATA = ("min_runtime_version", "CONVERSION_METADATA")


@dataclasses.dataclass(frozen=True)
class CompressedTensor:
    """One constant tensor that `compress_for_micro` re-encoded.

    Attributes:
        name: the tensor's name in the file.
        shape: the tensor's shape.
        dtype: the TFLite element type, e.g. `"INT8"`.
        sparsity: fraction of the elements equal to the zero point (the ones
            the mask drops).
        bytes_before: size of the dense data.
        bytes_after: size of the encoded mask plus the ancillary data (header
            and kept values).
    """

    name: str
    shape: tuple
    dtype: str
    sparsity: float
    bytes_before: int
    bytes_after: int


@dataclasses.dataclass(frozen=True)
class MicroCompression:
    """What `compress_for_micro` did.

    Attributes:
        tensors: a tuple of `CompressedTensor`, one per re-encoded tensor, in
            file order; empty when no tensor was re-encoded (the file was
            returned unchanged, or only stripped of its strings).
        bytes_before: size of the input file.
        bytes_after: size of the returned file.
        decoded_bytes: arena (or alternate decompression memory) bytes the
            decoded tensors need at most: the sum of the dense sizes of every
            DECODE output.
    """

    tensors: tuple
    bytes_before: int
    bytes_after: int
    decoded_bytes: int


class PruneCompressor:
    """TFLM DECODE PRUNE encoder, a tflite_micro compression plugin.

    Implements tflite_micro's `compressor.Compressor` protocol (which is duck
    typed): `decode_type` and `compress(tensor, method)`. tflite_micro is
    imported only when the methods run.
    """

    @property
    def decode_type(self):
        """The DECODE type this plugin writes: `DecodeType.PRUNING` (2)."""
        from tflite_micro.tensorflow.lite.micro.compression import decode

        return decode.DecodeType.PRUNING

    def compress(self, tensor, method):
        """Encodes a constant tensor as a PRUNE mask and ancillary data.

        Args:
            tensor: a `model_editor.Tensor` with data.
            method: a `spec.PruningCompression`.

        Returns:
            A `compressor.CompressionResult`.

        Raises:
            compressor.CompressionError: when the decoder cannot rebuild the
                tensor (unsupported type or quantization layout).
        """
        from tflite_micro.tensorflow.lite.micro.compression import (
            compressor,
            decode,
            spec,
        )

        if not isinstance(method, spec.PruningCompression):
            raise compressor.CompressionError(
                f"PruneCompressor needs a PruningCompression, got {method!r}"
            )
        elements, zero_points = _elements_and_zero_points(tensor)
        mask = elements != zero_points
        header = decode.DecodeCommonMetadata(
            decode_type=self.decode_type,
            version=_DCM_VERSION,
            user_data=bytes([_PRUNE_VERSION]) + bytes(11),
        ).to_bytes()
        return compressor.CompressionResult(
            encoded_data=np.packbits(mask.ravel(), bitorder="big").tobytes(),
            ancillary_data=header + elements[mask].tobytes(),
        )


def _elements_and_zero_points(tensor):
    """The tensor's elements (integer view) and what masked ones decode to.

    Mirrors `DecodeStatePrune::Setup`: quantization with more than one scale is
    per channel along the last axis when `quantized_dimension` is it, else along
    axis 0 (any other axis is refused); int8 uses the per-channel zero points,
    every other type the first one, which must then be 0.

    Returns:
        `(elements, zero_points)`: an array of the tensor's shape, and an array
        broadcastable to it.
    """
    from tflite_micro.tensorflow.lite.micro.compression import (
        compressor,
        tensor_type,
    )

    type_name = tensor_type.name(tensor.dtype)
    view = _ELEMENT_VIEWS.get(type_name)
    if view is None:
        raise compressor.CompressionError(
            f"the PRUNE decoder does not handle {type_name} tensors"
        )
    shape = tuple(int(d) for d in tensor.shape)
    data = tensor.buffer.data if tensor.buffer is not None else b""
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0 or len(data) != count * view.itemsize:
        raise compressor.CompressionError(
            f"tensor data of {len(data)} bytes does not match shape {shape}"
        )
    elements = np.frombuffer(data, dtype=view).reshape(shape)

    quantization = tensor.quantization  # model_editor.Quantization or None
    if quantization is None:
        return elements, np.zeros((), view)  # not affine-quantized: zero point 0
    scales = np.atleast_1d(quantization.scales)
    points = np.atleast_1d(quantization.zero_points)
    if scales.size == 0:
        return elements, np.zeros((), view)
    if points.size == 0:
        raise compressor.CompressionError("quantization has scales but no zero points")
    channels = scales.size
    axis = 0 if quantization.axis is None else int(quantization.axis)
    rank = len(shape)
    if channels > 1 and axis == rank - 1:
        pass  # the decoder's "alternate axis": channels cycle element by element
    elif axis != 0:
        raise compressor.CompressionError(
            f"the PRUNE decoder handles quantized_dimension 0 or the last axis, "
            f"got {axis} for shape {shape}"
        )
    if type_name == "INT8" and channels > 1:
        if points.size != channels or shape[axis] != channels:
            raise compressor.CompressionError(
                f"{channels} scales and {points.size} zero points do not match "
                f"axis {axis} of shape {shape}"
            )
        broadcast = [1] * rank
        broadcast[axis] = channels
        return elements, points.astype(view).reshape(broadcast)
    if type_name != "INT8" and np.any(points != 0):
        # The decoder fills every masked element with the first zero point.
        raise compressor.CompressionError(
            f"the PRUNE decoder needs zero points 0 for {type_name}, got {points.tolist()}"
        )
    return elements, points[:1].astype(view).reshape(())


def _packed_size(table):
    """Bytes a flatbuffer object-API table takes once serialized."""
    import flatbuffers

    builder = flatbuffers.Builder(0)
    table.Pack(builder)
    return builder.Offset()


def _bookkeeping_bytes(tensor, consumers, ancillary_size, named):
    """Estimates the file bytes the DECODE insertion adds around one tensor.

    Each consumer gets a DECODE operator and a decoded tensor, a copy of the
    original entry (quantization parameters included); the tensor gets one
    ancillary tensor and one new buffer, and its own entry loses its
    quantization parameters. The new tensors are named after the tensor when
    `named` (the file keeps its names).
    """
    from tflite_micro.tensorflow.lite.micro.python import (
        schema_py_generated as schema,
    )

    name = tensor.name if named else None
    decoded = copy.deepcopy(tensor._fb)
    decoded.name = f"{name}_decoded" if name else None
    decoded.buffer = 0
    ancillary = schema.TensorT()
    ancillary.shape = [ancillary_size]
    ancillary.type = schema.TensorType.UINT8
    ancillary.name = f"{name}_ancillary" if name else None
    operator = schema.OperatorT()
    operator.inputs = [0, 0]
    operator.outputs = [0]
    per_consumer = _packed_size(decoded) + _packed_size(operator)
    quantization = tensor._fb.quantization
    dropped = 0 if quantization is None else _packed_size(quantization)
    return (
        consumers * per_consumer
        + _packed_size(ancillary)
        + _BUFFER_BOOKKEEPING_BYTES
        - dropped
    )


@dataclasses.dataclass
class _Candidate:
    key: tuple  # (subgraph index, tensor index)
    row: CompressedTensor
    result: object  # compressor.CompressionResult
    saving: int  # file bytes saved, bookkeeping included
    decoded_bytes: int


def _lut_encode(tensor):
    """TFLM DECODE LUT encoding with the fewest index bits that hold every
    distinct value (per channel when the tensor is quantized per channel),
    through tflite_micro's own LUT plugin."""
    from tflite_micro.tensorflow.lite.micro.compression import compressor, lut, spec

    scales = (
        getattr(tensor.quantization, "scales", None) if tensor.quantization else None
    )
    if scales is not None and len(scales) > 1:
        mode = spec.PerChannel(axis=int(tensor.quantization.axis or 0))
        channels = np.moveaxis(np.asarray(tensor.array), mode.axis, 0)
        distinct = max(len(np.unique(c)) for c in channels)
    else:
        mode = spec.PerTensor()
        distinct = len(np.unique(np.asarray(tensor.array)))
    bits = max(1, int(np.ceil(np.log2(max(distinct, 2)))))
    if bits > _MAX_LUT_BITS:
        raise compressor.CompressionError(
            f"{distinct} distinct values need {bits} index bits"
        )
    return lut.LutCompressor().compress(
        tensor, spec.LookUpTableCompression(index_bitwidth=bits, mode=mode)
    )


def _sparsity(tensor):
    """Fraction of entries equal to their zero point (what PRUNE drops)."""
    from tflite_micro.tensorflow.lite.micro.compression import compressor

    try:
        elements, zero_points = _elements_and_zero_points(tensor)
    except compressor.CompressionError:  # a layout PRUNE refuses; LUT took it
        return float(np.mean(np.asarray(tensor.array) == 0))
    return float(np.mean(elements == zero_points))


def _encoders(method):
    """The encoders `method` tries on each tensor: functions tensor -> result."""
    from tflite_micro.tensorflow.lite.micro.compression import spec

    def prune(tensor):
        return PruneCompressor().compress(tensor, spec.PruningCompression())

    return {"prune": [prune], "lut": [_lut_encode], "auto": [prune, _lut_encode]}[
        method
    ]


def _candidates(model, encoders, named):
    """Every constant tensor that an encoder can encode, with the estimated
    saving of its best encoding (`named`: whether the file keeps its names)."""
    from tflite_micro.tensorflow.lite.micro.compression import (
        compressor,
        constant_inputs,
        model_editor,
        tensor_type,
    )

    aliases = {}
    for tensor in model_editor.iter_tensors(model):
        if tensor.buffer is not None:
            aliases[id(tensor.buffer)] = aliases.get(id(tensor.buffer), 0) + 1

    found = []
    for subgraph_index, subgraph in enumerate(model.subgraphs):
        boundary = {id(t) for t in subgraph.inputs + subgraph.outputs}
        for tensor_index, tensor in enumerate(subgraph.tensors):
            if (
                tensor.buffer is None
                or not tensor.buffer.data
                or tensor.is_variable
                or aliases[id(tensor.buffer)] > 1  # its dense copy would stay
                or id(tensor) in boundary
                or constant_inputs.find_uses(subgraph, tensor)
            ):
                continue
            consumers = len(subgraph.consumers_of(tensor))
            if not consumers:
                continue
            results = []
            for encode in encoders:
                try:
                    results.append(encode(tensor))
                except compressor.CompressionError:
                    continue
            if not results:
                continue
            before = len(tensor.buffer.data)
            result = min(
                results, key=lambda r: len(r.encoded_data) + len(r.ancillary_data)
            )
            after = len(result.encoded_data) + len(result.ancillary_data)
            bookkeeping = _bookkeeping_bytes(
                tensor, consumers, len(result.ancillary_data), named
            )
            row = CompressedTensor(
                name=tensor.name or f"tensor {tensor_index}",
                shape=tuple(int(d) for d in tensor.shape),
                dtype=tensor_type.name(tensor.dtype),
                sparsity=_sparsity(tensor),
                bytes_before=before,
                bytes_after=after,
            )
            found.append(
                _Candidate(
                    key=(subgraph_index, tensor_index),
                    row=row,
                    result=result,
                    saving=before - after - bookkeeping,
                    decoded_bytes=before * consumers,
                )
            )
    return found


def _drop_encoded_quantization(model):
    """Removes the quantization parameters of the DECODE inputs, in place.

    `decode_insert` sets an encoded tensor's `quantization` to `None`, but
    `model_editor` writes only quantization that is set, so the tensor's
    flatbuffer entry keeps the original scales and zero points: 12 bytes per
    channel, repeated by the decoded tensor that needs them. The DECODE
    kernels read the quantization of their output, never of their inputs
    (TFLM's `decode_state_prune.cc`, `decode_state_lut.cc`).
    """
    from tflite_micro.tensorflow.lite.micro.compression import decode_insert

    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            if operator.custom_code == decode_insert.DECODE_CUSTOM_OP_NAME:
                for tensor in operator.inputs:  # encoded and ancillary tensors
                    tensor._fb.quantization = None


def _strip_strings(model):
    """Removes what TFLite Micro never reads from a `model_editor.Model`.

    As TensorFlow's `flatbuffer_utils.strip_strings`: the model description,
    the subgraph and tensor names, and the signature defs (which map names to
    tensors); and the converter's informational metadata. Operator custom
    codes (`TFLM_DECODE`) and other metadata (such as TFLM's
    `OfflineMemoryAllocation` plan) stay. Interpreters address inputs and
    outputs by index, so the outputs do not change.
    """
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model.description = None
    model._fb.signatureDefs = None  # model_editor keeps them in its ModelT
    for name in _INFORMATIONAL_METADATA:
        model.metadata.pop(name, None)
    # model_editor writes the remaining metadata into new buffers: drop the
    # buffers read from the file, which no tensor references.
    model_editor.prune_buffers(model)
    for subgraph in model.subgraphs:
        subgraph.name = None
        for tensor in subgraph.tensors:
            tensor.name = None


def _within_budget(candidates, budget):
    """Picks candidates whose decoded bytes sum to at most `budget`.

    Greedy by saving per decoded byte, compared with the best single candidate
    that fits (the classic 1/2-approximation of this knapsack).
    """
    order = sorted(candidates, key=lambda c: c.saving / c.decoded_bytes, reverse=True)
    greedy, used = [], 0
    for candidate in order:
        if used + candidate.decoded_bytes <= budget:
            greedy.append(candidate)
            used += candidate.decoded_bytes
    fitting = [c for c in candidates if c.decoded_bytes <= budget]
    best = max(fitting, key=lambda c: c.saving, default=None)
    if best is not None and best.saving > sum(c.saving for c in greedy):
        return [best]
    return greedy


def _align(data):
    """Re-serializes with the schema's 16-byte buffer alignment (C++ tool)."""
    from tflite_micro.tensorflow.lite.micro.tools import (
        tflite_flatbuffer_align_wrapper,
    )

    with tempfile.TemporaryDirectory(prefix="keras-pruning-") as directory:
        source = os.path.join(directory, "unaligned.tflite")
        target = os.path.join(directory, "aligned.tflite")
        with open(source, "wb") as handle:
            handle.write(data)
        tflite_flatbuffer_align_wrapper.align_tflite_model(source, target)
        with open(target, "rb") as handle:
            return handle.read()


def _check_int(value, name, allow_none=False):
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        allowed = "a non-negative int or None" if allow_none else "a non-negative int"
        raise TypeError(f"`{name}` must be {allowed}. Received: {name}={value!r}")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value!r}")


def compress_for_micro(
    tflite_bytes,
    *,
    method="prune",
    min_saving_bytes=DEFAULT_MIN_SAVING_BYTES,
    ram_budget_bytes=None,
    strip_strings=True,
):
    """Re-encodes the pruned weights of a TFLite Micro file with DECODE.

    Each constant tensor that pays off is replaced by a 1-bit keep mask and an
    ancillary tensor holding the kept values (TFLM's PRUNE encoding, see the
    module docstring), and a `TFLM_DECODE` custom operator is inserted before
    each of its consumers to rebuild it at run time. Outputs stay bit-exact.
    Only tensors the decoder can rebuild are considered (bool, int8, int16,
    int32, int64, float32; quantized along the first or last axis; not shared
    with another tensor; not an input that must stay constant, such as a
    RESHAPE shape).

    A tensor is re-encoded when it saves at least `min_saving_bytes`, where the
    saving is the dense size, minus the mask and ancillary data, minus an
    estimate of the flatbuffer entries the insertion adds (per consumer, an
    operator and a decoded tensor, which carries the quantization parameters
    that the encoded tensor drops; per tensor, an ancillary tensor and a
    buffer). If the resulting file is not
    smaller than the input, the input is returned unchanged.

    With `strip_strings`, the file also loses what TFLite Micro never reads,
    as TensorFlow's `flatbuffer_utils.strip_strings` does: the model
    description, subgraph and tensor names, and signature defs; and the
    converter's `min_runtime_version` and `CONVERSION_METADATA` metadata. This
    happens even when no tensor is re-encoded. TFLite Micro and LiteRT run
    the stripped file with the same outputs (they address inputs and outputs
    by index); keep the names to read the file in a viewer such as Netron,
    or to call LiteRT's signature runner.

    RAM rule: every DECODE output is a dense tensor in the arena (or in the
    interpreter's alternate decompression memory). With `ram_budget_bytes`,
    the dense sizes of all DECODE outputs (one per consumer) must sum to at
    most the budget. This bounds the extra RAM whatever the memory planner
    overlaps; it is exact for alternate decompression memory. Tensors are
    chosen greedily by saving per decoded byte (or the single best tensor
    that fits, when that saves more).

    The TFLite Micro runtime running the result must include the DECODE
    operator (the `tflite-micro` Python runtime does).

    Args:
        tflite_bytes: a `.tflite` file, as bytes, for TensorFlow Lite Micro
            (no sparse tensors).
        method: `"prune"` (1-bit mask plus kept values), `"lut"` (a table of
            distinct values plus 1- to 7-bit indices, per channel for
            per-channel quantized tensors: pays off on clustered weights), or
            `"auto"` (the smaller of the two, per tensor). Defaults to
            `"prune"`.
        min_saving_bytes: smallest saving, in bytes, for which a tensor is
            re-encoded. Defaults to `64`.
        ram_budget_bytes: most bytes the decoded tensors may need at run time,
            or `None` for no limit. Defaults to `None`.
        strip_strings: remove the names, signature defs and informational
            metadata (see above); `False` keeps them. Defaults to `True`.

    Returns:
        A tuple `(compressed_bytes, report)`: the new file as bytes (the input,
        unchanged, when nothing pays off) and a `MicroCompression`.

    Raises:
        TypeError: if `tflite_bytes` is not bytes, an integer argument is
            not an int, or `strip_strings` is not a bool.
        ValueError: if `tflite_bytes` is not a TFLite flatbuffer or holds
            sparse tensors, `method` is unknown, or an integer argument is
            negative.
        ImportError: if `tflite-micro` is not installed.

    Examples:
        >>> small, report = compress_for_micro(data)
        >>> [(t.name, t.bytes_before, t.bytes_after) for t in report.tensors]
        >>> named, _ = compress_for_micro(data, strip_strings=False)
    """
    if not isinstance(tflite_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(
            "`tflite_bytes` must be the bytes of a .tflite file. "
            f"Received: tflite_bytes of type {type(tflite_bytes).__name__}"
        )
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(
            f"`method` must be one of {_METHODS}. Received: method={method!r}"
        )
    _check_int(min_saving_bytes, "min_saving_bytes")
    _check_int(ram_budget_bytes, "ram_budget_bytes", allow_none=True)
    if not isinstance(strip_strings, bool):
        raise TypeError(
            "`strip_strings` must be True or False. "
            f"Received: strip_strings={strip_strings!r}"
        )
    data = bytes(tflite_bytes)
    require("tflite_micro")
    info = model_info(data, "tflite_bytes")
    if info.sparse_tensors:
        raise ValueError(
            "`tflite_bytes` holds sparse tensors, which TensorFlow Lite Micro "
            "cannot run; convert without `Optimize.EXPERIMENTAL_SPARSITY`. "
            f"Received: sparse tensors {list(info.sparse_tensors)}"
        )

    from tflite_micro.tensorflow.lite.micro.compression import (
        decode_insert,
        model_editor,
    )

    unchanged = (data, MicroCompression((), len(data), len(data), 0))
    model = model_editor.read(data)
    candidates = [
        c
        for c in _candidates(model, _encoders(method), named=not strip_strings)
        if c.saving >= min_saving_bytes
    ]
    if ram_budget_bytes is not None:
        candidates = _within_budget(candidates, ram_budget_bytes)
    if not candidates and not strip_strings:
        return unchanged
    candidates.sort(key=lambda c: c.key)

    if strip_strings:
        # The signature defs go: put the inputs and outputs in the model's
        # order, which they recorded, so interpreters find them by index.
        main = model.subgraphs[0]
        main.inputs = [main.inputs[p] for p in info.input_positions]
        main.outputs = [main.outputs[p] for p in info.output_positions]
        _strip_strings(model)
    if candidates:
        results = {c.key: c.result for c in candidates}
        decode_insert.insert_decode_operators(model, results)
        _drop_encoded_quantization(model)
    compressed = _align(bytes(model.build()))
    if len(compressed) >= len(data):
        return unchanged
    report = MicroCompression(
        tensors=tuple(c.row for c in candidates),
        bytes_before=len(data),
        bytes_after=len(compressed),
        decoded_bytes=sum(c.decoded_bytes for c in candidates),
    )
    return compressed, report
