"""Reading TFLite flatbuffers: validation, operators, sparse tensors."""

import dataclasses
import re

from keras_pruning.export._deps import require

_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a TFLite file holds, read without running it."""

    operators: tuple  # builtin operator names, or custom codes, in first-use order
    sparse_tensors: tuple  # names of tensors stored with a sparsity encoding
    num_subgraphs: int
    num_inputs: int  # of the main subgraph
    num_outputs: int
    # For the model's inputs (outputs) in order, their positions among the main
    # subgraph's, where the converter may have put them in another order.
    input_positions: tuple
    output_positions: tuple
    # TensorType names ("INT8", "FLOAT32", ...) of the inputs (outputs), in
    # the model's order.
    input_types: tuple
    output_types: tuple


def _schema():
    require("tflite_micro")
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def check_tflite_bytes(data, name="tflite_bytes"):
    """Raises TypeError/ValueError unless `data` is a parseable TFLite model."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"`{name}` must be the bytes of a .tflite file. "
            f"Received: {name} of type {type(data).__name__}"
        )
    data = bytes(data)
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ValueError(
            f"`{name}` is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4). "
            f"Received: {len(data)} bytes starting with {data[:8]!r}"
        )
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as error:  # a truncated or corrupt buffer fails anywhere
        raise ValueError(
            f"`{name}` is a truncated or corrupt TFLite file: {error!r}. "
            f"Received: {len(data)} bytes"
        ) from None
    if not model.subgraphs:
        raise ValueError(f"`{name}` holds no subgraph. Received: {len(data)} bytes")
    return model


def model_info(data, name="data"):
    """Returns the `ModelInfo` of a TFLite file, validating it first."""
    model = check_tflite_bytes(data, name)
    schema = _schema()
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    operators = []
    for code in model.operatorCodes or []:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            label = (
                code.customCode.decode()
                if isinstance(code.customCode, bytes)
                else str(code.customCode)
            )
        else:
            label = code_names.get(builtin, f"BUILTIN_{builtin}")
        operators.append(label)
    sparse = []
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            if tensor.sparsity is not None:
                raw = tensor.name
                sparse.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    main = model.subgraphs[0]
    inputs = list(main.inputs if main.inputs is not None else ())
    outputs = list(main.outputs if main.outputs is not None else ())
    signature = (model.signatureDefs or [None])[0]
    input_positions = _positions(inputs, signature and signature.inputs)
    output_positions = _positions(outputs, signature and signature.outputs)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if k.isupper()}

    def types(tensors, positions):
        return tuple(
            type_names.get(main.tensors[tensors[p]].type, "UNKNOWN") for p in positions
        )

    return ModelInfo(
        operators=tuple(operators),
        sparse_tensors=tuple(sparse),
        num_subgraphs=len(model.subgraphs),
        num_inputs=len(inputs),
        num_outputs=len(outputs),
        input_positions=input_positions,
        output_positions=output_positions,
        input_types=types(inputs, input_positions),
        output_types=types(outputs, output_positions),
    )


def _positions(tensors, named):
    """The positions in `tensors` (the subgraph's input or output tensor
    indices) of a signature's entries in their model order: the order of the
    `n` in their names `input_<n>` / `output_<n>`, as `to_tflite` names them.
    The subgraph's order where the names are otherwise (or stripped:
    `compress_for_micro` puts the subgraph's in the model's order first)."""
    identity = tuple(range(len(tensors)))
    entries = []
    for entry in named or ():
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        match = re.fullmatch(r"(?:input|output)_(\d+)", name or "")
        if match is None or entry.tensorIndex not in tensors:
            return identity
        entries.append((int(match[1]), tensors.index(entry.tensorIndex)))
    if sorted(p for _, p in entries) != list(identity):
        return identity
    return tuple(p for _, p in sorted(entries))
