"""Optional dependencies of the export module, imported lazily."""

import importlib.util

_INSTALL = {
    "tensorflow": "pip install 'keras-pruning'  (TensorFlow is a core dependency)",
    "ai_edge_litert": "pip install 'keras-pruning[export]'",
    "tflite_micro": "pip install 'keras-pruning[export]'",
}


def require(module):
    """Raises ImportError saying what to install when `module` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"keras_pruning.export needs `{module}`: {_INSTALL[module]}")
