"""`prune_channels`: one-shot structured pruning into a smaller plain model."""

import keras

from keras_pruning.structured import _channels, _gradients
from keras_pruning.structured._graph import Analysis, _check_ignore, layer_weights
from keras_pruning.structured._surgery import shrink


def prune_channels(
    model,
    sparsity,
    *,
    importance="l2",
    ignore=(),
    round_to=1,
    global_pruning=False,
    data=None,
    loss=None,
):
    """Removes the least important channels of every prunable group.

    The groups come from `dependency_groups`: channels coupled by Add,
    Concatenate, DepthwiseConv2D or BatchNormalization go together; channels
    reaching a model output or input are never removed.

    Args:
        model: a built Sequential or functional model (nested models are
            pruned inside), without pruning wrappers.
        sparsity: the fraction of each group's channels to remove, in
            [0, 1); a group keeps `max(round(C * (1 - sparsity)), 1)` of its
            `C` channels.
        importance: `"l2"` (sum of squared weights the channel touches),
            `"l1"`, `"bn_scale"` (|BatchNormalization gamma|), `"taylor"`
            (`(sum w * dL/dw)^2`; needs `data`), or a function
            `(weights, gradients) -> scores` (see
            `keras_pruning.structured.importance`). Defaults to `"l2"`.
        ignore: layer names or classes whose channels are never cut.
            Defaults to `()`.
        round_to: kept channel counts become multiples of this (SIMD
            friendly). Defaults to `1`.
        global_pruning: rank all groups' channels together (scores divided
            by each group's mean), so groups end at different sparsities and
            the overall fraction removed is `sparsity`. Defaults to `False`.
        data: `(x, y)` arrays for `importance="taylor"`. Defaults to `None`.
        loss: the loss for `"taylor"`; defaults to the model's compiled loss.

    Returns:
        A new, uncompiled `keras.Model` of standard layers with fewer
        channels and the kept weights copied; `model` is unchanged. It saves,
        loads and converts to TFLite like any model.

    Raises:
        ValueError: for invalid arguments, a layer the analysis cannot trace
            (name it in `ignore`), or a model holding pruning wrappers.

    Examples:
        >>> small = prune_channels(model, 0.5)
        >>> small.count_params() < model.count_params()
        True
    """
    from keras_pruning.prune import pruning_wrappers

    sparsity = _channels.check_sparsity(sparsity)
    round_to = _channels.check_round_to(round_to)
    if not isinstance(global_pruning, bool):
        raise TypeError(
            "`global_pruning` must be True or False. "
            f"Received: global_pruning={global_pruning!r}"
        )
    ignore = _check_ignore(ignore)
    _, needs_gradients, _ = _channels.resolve_importance(importance)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Sequential or functional keras.Model. "
            f"Received: model={model!r} (of type {type(model).__name__})"
        )
    if pruning_wrappers(model):
        raise ValueError(
            f"Model {model.name!r} holds PruneLowMagnitude wrappers. Call "
            "`keras_pruning.strip_pruning(model, shrink=True)` for a model "
            "pruned with granularity='channel', or `strip_pruning(model)` "
            "before `prune_channels`."
        )
    analysis = Analysis(model, ignore)
    gradients = None
    if needs_gradients:
        variables = [
            v for layer, _ in analysis.calls for v, _, _ in layer_weights(layer)
        ]
        gradients = _gradients.loss_gradients(model, variables, data, loss)
    scores = _channels.group_scores(analysis, importance, gradients=gradients)
    sizes = {g.id: g.size for g in analysis.groups}
    keep = _channels.choose_channels(scores, sizes, sparsity, round_to, global_pruning)
    return shrink(model, analysis, keep)
