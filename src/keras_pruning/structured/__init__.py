"""Structured pruning: remove whole channels, so models get smaller and faster.

Three concerns live apart, as in Torch-Pruning: *which* channels must go
together (`dependency_groups`), *which* matter (`importance`), and *how* a
model is cut (`prune_channels`, and `strip_pruning(model, shrink=True)` after
gradual pruning with `prune_low_magnitude(..., granularity="channel")`).
"""

from keras_pruning.structured import importance
from keras_pruning.structured._graph import Group, Member, dependency_groups
from keras_pruning.structured._prune import prune_channels

__all__ = ("Group", "Member", "dependency_groups", "importance", "prune_channels")
