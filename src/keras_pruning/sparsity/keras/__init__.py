"""The names of `tensorflow_model_optimization.sparsity.keras`, on Keras 3.

Migrating from TFMOT is a one-line change:
`import keras_pruning as tfmot` instead of
`import tensorflow_model_optimization as tfmot`.
"""

import contextlib

from keras_pruning.callbacks import PruningSummaries, UpdatePruningStep
from keras_pruning.policy import PruneForLatencyOnXNNPack, PruningPolicy
from keras_pruning.prune import prune_low_magnitude, strip_pruning
from keras_pruning.registry import PrunableLayer
from keras_pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

__all__ = (
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
)


@contextlib.contextmanager
def prune_scope():
    """Does nothing; kept so that TFMOT code runs unchanged.

    keras-pruning registers its classes with Keras, so pruned models load
    without a scope or `custom_objects`.
    """
    yield
