"""TFMOT-compatible namespace: `import keras_pruning as tfmot` makes
`tfmot.sparsity.keras.prune_low_magnitude(...)` work."""

from keras_pruning.sparsity import keras

__all__ = ("keras",)
