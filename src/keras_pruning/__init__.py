"""keras-pruning: magnitude pruning for Keras 3, with TFMOT's API.

Importing this package registers every serializable class, so pruned `.keras`
files load with `keras.models.load_model` and no custom objects.
"""

from keras_pruning.callbacks import PruningSummaries, UpdatePruningStep
from keras_pruning.cost import LayerCost, compare_cost, model_cost
from keras_pruning.masks import (
    block_magnitude_mask,
    global_magnitude_masks,
    m_by_n_mask,
    magnitude_mask,
)
from keras_pruning.oneshot import prune_to_sparsity
from keras_pruning.policy import (
    PruneForLatencyOnXNNPack,
    PruningPolicy,
    pad_for_xnnpack,
)
from keras_pruning.prune import prune_low_magnitude, pruning_wrappers, strip_pruning
from keras_pruning.registry import PrunableLayer, get_prunable_weights
from keras_pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from keras_pruning.stats import WeightSparsity, sparsity_report
from keras_pruning.wrapper import PruneLowMagnitude

# TFMOT's namespace: `import keras_pruning as tfmot; tfmot.sparsity.keras...`
from keras_pruning import (  # isort: skip
    allocation,
    analysis,
    criteria,
    datasets,
    lottery,
    sparsity,
    structured,
)

__version__ = "0.1.0"

__all__ = (
    "ConstantSparsity",
    "LayerCost",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "WeightSparsity",
    "allocation",
    "analysis",
    "block_magnitude_mask",
    "compare_cost",
    "criteria",
    "datasets",
    "get_prunable_weights",
    "global_magnitude_masks",
    "lottery",
    "m_by_n_mask",
    "magnitude_mask",
    "model_cost",
    "pad_for_xnnpack",
    "prune_low_magnitude",
    "prune_to_sparsity",
    "pruning_wrappers",
    "sparsity",
    "sparsity_report",
    "strip_pruning",
    "structured",
)
