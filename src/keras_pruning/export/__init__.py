"""Strip and export: TFLite for LiteRT and TensorFlow Lite Micro.

TensorFlow, `ai_edge_litert` and `tflite_micro` are imported lazily, inside
these functions; install the interpreters with
`pip install 'keras-pruning[export]'`.
"""

from keras_pruning._files import save_model, write_atomic
from keras_pruning.export._convert import to_tflite
from keras_pruning.export._csource import write_c_source
from keras_pruning.export._flatbuffer import ModelInfo, model_info
from keras_pruning.export._micro_compress import (
    CompressedTensor,
    MicroCompression,
    compress_for_micro,
)
from keras_pruning.export._report import information_floor_bytes, report
from keras_pruning.export._runtime import VerifyResult, min_arena_bytes, run, verify

__all__ = (
    "CompressedTensor",
    "MicroCompression",
    "ModelInfo",
    "VerifyResult",
    "compress_for_micro",
    "information_floor_bytes",
    "min_arena_bytes",
    "model_info",
    "report",
    "run",
    "save_model",
    "to_tflite",
    "verify",
    "write_atomic",
    "write_c_source",
)
