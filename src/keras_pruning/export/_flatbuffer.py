"""Reading TFLite flatbuffers: validation, operators, sparse tensors."""

import dataclasses

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
    return ModelInfo(
        operators=tuple(operators),
        sparse_tensors=tuple(sparse),
        num_subgraphs=len(model.subgraphs),
        num_inputs=len(main.inputs if main.inputs is not None else ()),
        num_outputs=len(main.outputs if main.outputs is not None else ()),
    )
