"""`PruneLowMagnitude`: the one layer that holds pruning masks."""

import math
import numbers

import keras
import numpy as np
from keras import ops
from keras.src.backend import get_keras_mask
from keras.src.backend.common.stateless_scope import in_stateless_scope

from keras_pruning import allocation as allocation_lib
from keras_pruning import criteria as criteria_lib
from keras_pruning import masks as masks_lib
from keras_pruning import registry
from keras_pruning.schedules import ConstantSparsity, PruningSchedule

__all__ = ("PruneLowMagnitude",)

_POOLING_TYPES = ("avg", "max")
_GRANULARITIES = ("weight", "channel")
_CHANNEL_SIDES = ("in", "out")
_STEP_KEY = "pruning_step"


def _validate_pooling_type(block_pooling_type):
    if not isinstance(block_pooling_type, str) or (
        block_pooling_type.lower() not in _POOLING_TYPES
    ):
        raise ValueError(
            f"`block_pooling_type` must be one of {_POOLING_TYPES} (or TFMOT's "
            f"'AVG'/'MAX'). Received: block_pooling_type={block_pooling_type!r}"
        )
    return block_pooling_type.lower()


def _validate_m_by_n(sparsity_m_by_n):
    """`None`, or `(m, n)` as a tuple with `1 <= m < n`."""
    if sparsity_m_by_n is None:
        return None
    allowed = (
        "`sparsity_m_by_n` must be None or a pair (m, n) of integers with "
        "1 <= m < n: m weights pruned in every n consecutive ones, e.g. (2, 4). "
        f"Received: sparsity_m_by_n={sparsity_m_by_n!r}"
    )
    if (
        not isinstance(sparsity_m_by_n, (tuple, list))
        or len(sparsity_m_by_n) != 2
        or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in sparsity_m_by_n
        )
    ):
        raise TypeError(allowed)
    m, n = sparsity_m_by_n
    if not 1 <= m < n:
        raise ValueError(allowed)
    return (m, n)


def _channel_axis(layer, sparsity_m_by_n, block_size):
    """The axis m-by-n groups run along in `layer`'s weights (`None` without
    m-by-n); ValueError if `layer` has none, or with a `block_size` too."""
    if sparsity_m_by_n is None:
        return None
    if block_size != (1, 1):
        raise ValueError(
            "`sparsity_m_by_n` and `block_size` cannot be combined: pass one of "
            f"them. Received: sparsity_m_by_n={sparsity_m_by_n}, "
            f"block_size={block_size}"
        )
    axis = registry.input_channel_axis(layer)
    if axis is None:
        raise ValueError(
            "m-by-n sparsity groups weights along input channels, which are "
            f"known for {', '.join(registry.CHANNEL_AXIS_LAYERS)} (and their "
            f"subclasses). Layer {layer.name!r} of class {type(layer).__name__} "
            "is not one of them: leave it out with `layers=`. Received: "
            f"sparsity_m_by_n={sparsity_m_by_n}"
        )
    return axis


def _check_plain_weights(layer):
    """ValueError for a layer whose kernel is not a plain variable: LoRA
    adds a low-rank product to it, quantization replaces it."""
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer {layer.name!r} has LoRA enabled: its kernel is the sum of a "
            "frozen variable and a low-rank product, which a mask cannot prune. "
            "Prune and strip the model before `enable_lora()`, or leave the "
            f"layer out with `layers=`. Received: layer={layer.name!r}"
        )
    mode = getattr(layer.dtype_policy, "quantization_mode", None)
    if mode is not None:
        raise ValueError(
            f"Layer {layer.name!r} is quantized ({mode}): its kernel is stored "
            "quantized, with scales, not as the variable a mask multiplies. "
            "Prune, strip, then quantize. "
            f"Received: layer={layer.name!r}"
        )


def _check_ranks(layer, weights, block_size, sparsity_m_by_n):
    """ValueError for a weight of rank < 2 under a block or m-by-n pattern."""
    if block_size == (1, 1) and sparsity_m_by_n is None:
        return
    setting = (
        f"block_size={block_size}"
        if sparsity_m_by_n is None
        else f"sparsity_m_by_n={sparsity_m_by_n}"
    )
    for weight in weights:
        if len(weight.shape) < 2:
            raise ValueError(
                f"Weight {weight.path!r} of layer {layer.name!r} has shape "
                f"{tuple(weight.shape)}: block and m-by-n masks need weights of "
                "rank 2 or more (TFMOT's block masks: rank 2 only). Return only "
                f"such weights from `get_prunable_weights()`. Received: {setting}"
            )


def _plain_call(wrapper, args, kwargs):
    """Whether the wrapped layer's `call` can be run without its `__call__`:
    inside the wrapper's `__call__`, which casts the inputs and opens the
    autocast scope for the same dtype policy, `Layer.__call__` would only
    check and forward one unmasked tensor (as `Layer.stateless_call` runs
    `call` itself). Its Python work is paid at every eager PyTorch step: the
    benchmark MLP's forward and backward pass took 2.23 ms through
    `Layer.__call__` and 1.94 ms through `call`, against 1.50 ms dense
    (PyTorch, timed by hand)."""
    layer = wrapper.layer
    return (
        layer.built
        and len(args) == 1
        and set(kwargs) <= {"training"}
        and get_keras_mask(args[0]) is None
        and not layer._call_has_mask_arg
        and layer.activity_regularizer is None
        and layer.dtype_policy.name == wrapper.dtype_policy.name
        and layer.dtype_policy.quantization_mode is None
        and layer.autocast == wrapper.autocast
        and layer.input_dtype == wrapper.input_dtype
        and layer._convert_input_args
        and getattr(layer, "_remat_mode", None) is None
        and keras.distribution.distribution() is None
    )


def _call_with_values(wrapper, values, *args, **kwargs):
    """Calls the wrapped layer with some variables read as other tensors.

    `values` maps `id(variable)` to the tensor that stands for it. The call
    runs in a `keras.StatelessScope`, so nothing is assigned in place; updates
    the layer makes to its other variables (RNG seeds, states) are applied
    after the call, and its losses are re-added. Inside an enclosing stateless
    scope (the JAX trainer's, `stateless_call`), the layer's other variables
    are mapped to their values there, which the inner scope would hide;
    outside one, only the replaced variables are mapped (an eager PyTorch
    step then pays for no more than it needs). The layer's `call` runs
    directly where `_plain_call` allows it.
    """
    layer = wrapper.layer
    call = layer
    if _plain_call(wrapper, args, kwargs):
        call = layer.call
        if not layer._call_has_training_arg:
            kwargs.pop("training", None)
    if in_stateless_scope():
        mapping = [(v, values.get(id(v), v)) for v in layer.variables]
    else:
        mapping = [(v, values[id(v)]) for v in layer.variables if id(v) in values]
    with keras.StatelessScope(
        state_mapping=mapping, collect_losses=True, initialize_variables=False
    ) as scope:
        before = {id(v): scope.get_current_value(v) for v, _ in mapping}
        outputs = call(*args, **kwargs)
    updated = layer.variables
    for stateful in wrapper._stateful_layers:  # RNN states are untracked
        states = keras.tree.flatten(getattr(stateful, "states", None) or [])
        updated = updated + [v for v in states if isinstance(v, keras.Variable)]
    for variable in updated:
        value = scope.get_current_value(variable)
        if id(variable) not in values and value is not before.get(id(variable)):
            variable.assign(value)
    return outputs, scope.losses


def _accumulate_gradient(effective, accumulated):
    """Returns `effective` unchanged; the "gradient" of `accumulated` becomes
    `accumulated + dL/d(effective)`, which the optimizer writes into it (the
    variable has `overwrite_with_gradient=True`, as Keras's float8 scales).
    So the sum of the gradients builds up inside the training step, on every
    backend, with no assignment in `call()`."""

    @ops.custom_gradient
    def identity(effective, accumulated):
        def grad(*args, upstream=None, variables=None):
            del variables
            upstream = masks_lib._upstream(args, upstream)
            return upstream, accumulated + ops.cast(upstream, accumulated.dtype)

        return effective, grad

    return identity(effective, accumulated.value)


def _update_unstructured(updates):
    """Updates the masks of `(wrapper, sparsity)` pairs (wrappers with
    `_unstructured` masks set per layer) in one compiled
    `masks._update_unstructured` call: one dispatch and one fetch of its
    finiteness flags per update step, however many layers are due (the
    benchmark MLP's three, timed by hand: 7.9 to 9.3 ms with one call per
    layer, 6.1 to 6.5 ms together on TensorFlow; 3.1 and 2.6 ms on JAX).
    Nothing is written when a score is not finite.
    """
    weights, masks, counts, scores, shapes, spans = [], [], [], [], [], []
    for wrapper, sparsity in updates:
        start = len(weights)
        gradients = wrapper._gradients or [None] * len(wrapper._masks)
        for weight, mask, gradient in zip(
            wrapper._prunable_weights, wrapper._masks, gradients, strict=True
        ):
            shapes.append(weight.shape)
            weights.append(ops.reshape(weight, (-1,)))
            masks.append(ops.reshape(mask, (-1,)))
            size = int(np.prod(weight.shape))
            counts.append(masks_lib._count_argument(masks_lib.num_kept(size, sparsity)))
            scores.append(
                None
                if wrapper.criterion == "magnitude"
                else ops.reshape(
                    wrapper._criterion_scores(weight, mask, gradient), (-1,)
                )
            )
        spans.append((wrapper, slice(start, len(weights))))
    if not weights:
        return
    update = masks_lib._compiled(masks_lib._update_unstructured)
    finite, new_masks, thresholds, new_weights = update(weights, masks, counts, scores)
    finite = list(ops.convert_to_numpy(finite))
    for wrapper, span in spans:
        wrapper._raise_if_not_finite(finite[span])
    new_masks = [ops.reshape(m, s) for m, s in zip(new_masks, shapes, strict=True)]
    new_weights = [ops.reshape(w, s) for w, s in zip(new_weights, shapes, strict=True)]
    for wrapper, span in spans:
        wrapper._write(new_weights[span], new_masks[span], thresholds[span])


def _check_channel_settings(granularity, criterion, global_pruning, received):
    """ValueError for a criterion or global pruning with channel granularity."""
    if granularity == "channel" and (criterion != "magnitude" or global_pruning):
        raise ValueError(
            "granularity='channel' ranks channel groups by their l2 norm: it "
            "takes no `criterion` and no `global_pruning` (see "
            f"keras_pruning.structured for other channel criteria). {received}"
        )


def _check_combination(wrapper, granularity):
    """ValueError for settings that cannot work together."""
    received = (
        f"Received: granularity={granularity!r}, criterion={wrapper.criterion!r}, "
        f"global_pruning={wrapper.global_pruning}, allocation={wrapper.allocation!r}, "
        f"sparsity_bounds={wrapper.sparsity_bounds}, "
        f"sparsity_m_by_n={wrapper.sparsity_m_by_n}"
    )
    _check_channel_settings(
        granularity, wrapper.criterion, wrapper.global_pruning, received
    )
    if wrapper.global_pruning and wrapper.sparsity_m_by_n is not None:
        raise ValueError(
            "`sparsity_m_by_n` fixes every layer's sparsity at m / n: it cannot "
            f"be combined with `global_pruning=True`. {received}"
        )
    if not wrapper.global_pruning and (
        wrapper.allocation != "magnitude" or wrapper.sparsity_bounds is not None
    ):
        raise ValueError(
            "`allocation` and `sparsity_bounds` share a model-wide sparsity "
            "among layers: pass `global_pruning=True` with them (without it, "
            f"give layers their own schedules instead). {received}"
        )


def _relative_name(weight, layer):
    """`weight`'s path below `layer`, joined with "_": "kernel" for a Dense,
    "query_kernel" for a MultiHeadAttention's query projection."""
    parts = weight.path.split("/")
    if layer.name in parts:
        parts = parts[parts.index(layer.name) + 1 :]
    return "_".join(parts) or weight.name


def _pruned_at_zero(wrappers):
    """Whether every weight that the masks of `wrappers` prune is exactly 0
    (one compiled check of all of them)."""
    weights = [ops.convert_to_tensor(w) for x in wrappers for w in x._prunable_weights]
    masks = [ops.convert_to_tensor(m) for x in wrappers for m in x._masks]
    if not weights:
        return True
    return bool(masks_lib._compiled(masks_lib._pruned_are_zero)(weights, masks))


def _check_pruned_at_zero(wrappers):
    """ValueError naming the first of `wrappers` that holds its pruned weights
    at 0 (during `fit`) and has one that is not 0: a training step then used
    it unmasked."""
    held = [wrapper for wrapper in wrappers if wrapper._pruned_held_at_zero]
    if _pruned_at_zero(held):
        return
    wrapper = next(w for w in held if not _pruned_at_zero([w]))
    paths = [weight.path for weight in wrapper._prunable_weights]
    raise ValueError(
        f"Weights {paths} of layer {wrapper.layer.name!r} are not 0 everywhere "
        f"their masks prune them, at pruning step {wrapper._pruning_step}. "
        "During fit(), UpdatePruningStep holds pruned weights at 0 and the "
        "training step masks only their gradients, so something other than the "
        "model's optimizer (a callback, an assignment, another optimizer) "
        "changed them and training used them. Change weights between fit() "
        "calls, or use `UpdatePruningStep()` without "
        "`hold_pruned_weights_at_zero=True`: it masks the weights in every "
        "training step."
    )


@keras.saving.register_keras_serializable(package="keras_pruning")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a layer and prunes its weights by magnitude.

    The wrapper holds one boolean mask and one threshold per prunable
    weight (non-trainable variables created in `build`). The forward pass uses
    the effective weights `w * mask` (as Keras's LoRA uses an effective
    kernel), so the wrapped layer computes with sparse weights on every
    backend, and the gradient of a pruned weight is zero. Masks are updated
    between training steps by `UpdatePruningStep`, following the schedule;
    inference never changes weights or masks. While that callback holds the
    pruned weights at exactly 0 (an opt-in: its `hold_pruned_weights_at_zero`),
    a training step uses `w` itself, equal to `w * mask` then, and masks only
    its gradient.

    Args:
        layer: the `keras.layers.Layer` to prune. Its type must be supported
            (see `keras_pruning.registry`) or have `get_prunable_weights()`.
        pruning_schedule: a `PruningSchedule`. Defaults to a new
            `ConstantSparsity(0.5, 0)`.
        block_size: `(r, c)`: prune `r x c` blocks of the last two axes of
            each weight, as Keras stores it (`(input, output)` for a Dense
            kernel; `(in, out)` at each spatial position of a convolution
            kernel), scored by their pooled `|w|`; the schedule's sparsity is
            the fraction of blocks pruned. `(16, 1)` is LiteRT's int8 sparse
            `FULLY_CONNECTED` block. Weights must have rank 2 or more.
            Defaults to `(1, 1)`: unstructured pruning.
        block_pooling_type: how a block is scored: `"avg"` (mean `|w|`) or
            `"max"`. TFMOT's `"AVG"`/`"MAX"` are accepted. Defaults to `"avg"`.
        sparsity_m_by_n: `None`, or `(m, n)` with `1 <= m < n`: prune the `m`
            smallest of every `n` consecutive weights along the input
            channels (TFMOT's convention: `(2, 4)` keeps 2 of 4, NVIDIA's
            2:4). For Dense, EinsumDense and Conv1D/2D/3D layers (see
            `registry.input_channel_axis`). The mask is computed at every
            update the schedule selects, from the effective weights, so it is
            fixed by the first one; the schedule's sparsity is ignored.
            Cannot be combined with `block_size`. Defaults to `None`.
        granularity: `"weight"` masks single weights by magnitude;
            `"channel"` masks whole channels of every trainable per-channel
            weight (kernel slices, bias, BatchNormalization gamma and beta).
            Channel masks are set for the whole model at once by
            `UpdatePruningStep` (see `keras_pruning.structured`); use
            `prune_low_magnitude(model, granularity="channel")` rather than
            wrapping layers by hand. Defaults to `"weight"`.
        channel_sides: with `granularity="channel"`, which of the layer's
            channels are pruned: `"in"` (those it reads), `"out"` (those it
            makes), or both. Defaults to `("in", "out")`.
        criterion: which weights are pruned: `"magnitude"` (lowest `|w|`),
            `"taylor"` (lowest `|w * g|`, `g` the loss gradient summed since
            the last mask update), or a function `(weights, gradients) ->
            scores` (see `keras_pruning.criteria`). A criterion other than
            `"magnitude"` adds one float32 gradient accumulator per weight,
            a trainable variable the optimizer overwrites at each step.
            Defaults to `"magnitude"`.
        global_pruning: rank this layer's weights together with those of
            every other `global_pruning` wrapper of the model: their
            sparsity together follows the schedule (which they must share),
            and `UpdatePruningStep` sets their masks at once. Defaults to
            `False`.
        allocation: with `global_pruning`, how the sparsity is shared:
            `"magnitude"` (one threshold on the criterion's scores) or
            `"erk"` (per-tensor targets from the shapes, Erdős–Rényi-Kernel).
            Defaults to `"magnitude"`.
        sparsity_bounds: with `global_pruning`, `(floor, cap)`: the least
            and most sparsity this layer's weights may end with. Defaults to
            `None` (any).
        **kwargs: `keras.layers.Layer` arguments, such as `name`.

    Examples:
        >>> layer = PruneLowMagnitude(keras.layers.Dense(4))
        >>> layer.build((None, 3))
        >>> [tuple(m.shape) for m in layer.masks]
        [(3, 4)]
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="avg",
        sparsity_m_by_n=None,
        granularity="weight",
        channel_sides=_CHANNEL_SIDES,
        criterion="magnitude",
        global_pruning=False,
        allocation="magnitude",
        sparsity_bounds=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a keras.layers.Layer instance. "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Layer {layer.name!r} is already wrapped by PruneLowMagnitude; "
                "wrapping it twice would prune it twice. Received: "
                f"layer={layer.name!r}"
            )
        if isinstance(layer, keras.Model):
            raise TypeError(
                "PruneLowMagnitude wraps layers, not models: call "
                "`prune_low_magnitude(model)` to prune a model. Received: "
                f"layer={layer.name!r} (of type {type(layer).__name__})"
            )
        if granularity not in _GRANULARITIES:
            raise ValueError(
                f"`granularity` must be one of {_GRANULARITIES}. Received: "
                f"granularity={granularity!r}"
            )
        _check_plain_weights(layer)
        if granularity == "weight" and not registry.is_prunable(layer):
            raise ValueError(registry._unsupported_message(layer))
        if (
            not isinstance(channel_sides, (tuple, list))
            or not channel_sides
            or not all(side in _CHANNEL_SIDES for side in channel_sides)
        ):
            raise ValueError(
                f"`channel_sides` must be a non-empty subset of {_CHANNEL_SIDES}. "
                f"Received: channel_sides={channel_sides!r}"
            )
        channel_sides = tuple(channel_sides)
        if pruning_schedule is None:
            pruning_schedule = ConstantSparsity(0.5, 0)
        if not isinstance(pruning_schedule, PruningSchedule):
            raise TypeError(
                "`pruning_schedule` must be a keras_pruning.PruningSchedule, such "
                "as ConstantSparsity or PolynomialDecay. Received: "
                f"pruning_schedule={pruning_schedule!r}"
            )
        self.block_size = masks_lib._check_block_size(block_size)
        self.block_pooling_type = _validate_pooling_type(block_pooling_type)
        self.sparsity_m_by_n = _validate_m_by_n(sparsity_m_by_n)
        self.criterion = criteria_lib._check_criterion(criterion)
        if not isinstance(global_pruning, bool):
            raise TypeError(
                "`global_pruning` must be True or False. Received: "
                f"global_pruning={global_pruning!r}"
            )
        self.global_pruning = global_pruning
        self.allocation = allocation_lib._check_allocation(allocation)
        self.sparsity_bounds = allocation_lib._check_bounds(sparsity_bounds)
        _check_combination(self, granularity)
        self._channel_axis = _channel_axis(layer, self.sparsity_m_by_n, self.block_size)
        self.granularity = granularity
        self.channel_sides = channel_sides
        self.pruning_schedule = pruning_schedule
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        # The pruning step of the model, written by UpdatePruningStep: -1 until
        # training starts; the first training batch is step 1.
        self._pruning_step = -1
        # Set by UpdatePruningStep for the duration of `fit`.
        self._pruned_held_at_zero = False
        self._prunable_weights = []
        self._masks = []
        self._thresholds = []
        self._gradients = []
        # Stateful RNNs in the layer, set in build; untracked: not sublayers.
        object.__setattr__(self, "_stateful_layers", ())

    @property
    def pruning_step(self):
        """The current pruning step (-1 before training starts)."""
        return self._pruning_step

    @property
    def _pruning_step(self):
        return self._step

    @_pruning_step.setter
    def _pruning_step(self, step):
        self._set_step(step)

    def _set_step(self, step):
        # `call` reads only whether a step is set, which changes once: a
        # compiler that guards on Python values (torch.compile) would
        # otherwise recompile the training step at every step. Plain
        # attributes, set past `Layer.__setattr__`: its tracking costs 10 us
        # a wrapper (PyTorch), paid at every training step.
        object.__setattr__(self, "_step", step)
        object.__setattr__(self, "_step_is_set", step >= 0)

    @property
    def _unstructured(self):
        """Whether masks keep single weights, with no blocks or groups."""
        return self.sparsity_m_by_n is None and self.block_size == (1, 1)

    @property
    def prunable_weights(self):
        """The wrapped layer's variables that are masked."""
        return list(self._prunable_weights)

    @property
    def masks(self):
        """One boolean mask variable per prunable weight."""
        return list(self._masks)

    @property
    def thresholds(self):
        """One float32 threshold variable per prunable weight: the smallest
        magnitude (with a `block_size`, block score) kept at the last mask
        update (0 before any update)."""
        return list(self._thresholds)

    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as error:
                raise ValueError(
                    f"Could not build layer {self.layer.name!r} of class "
                    f"{type(self.layer).__name__} from the input shape "
                    f"{input_shape}. Build it (or call it once) before wrapping "
                    "it with PruneLowMagnitude."
                ) from error
        stateful = tuple(
            sublayer
            for sublayer in self.layer._flatten_layers(include_self=True)
            if getattr(sublayer, "stateful", False)
        )
        object.__setattr__(self, "_stateful_layers", stateful)
        if self.granularity == "channel":
            from keras_pruning.structured._graph import maskable_weights

            self._prunable_weights = [v for v, _, _ in maskable_weights(self.layer)]
        else:
            self._prunable_weights = registry.get_prunable_weights(self.layer)
            _check_ranks(
                self.layer,
                self._prunable_weights,
                self.block_size,
                self.sparsity_m_by_n,
            )
        for weight in self._prunable_weights:
            name = _relative_name(weight, self.layer)
            mask = self.add_weight(
                name=f"{name}_mask",
                shape=weight.shape,
                initializer="ones",
                dtype=masks_lib.MASK_DTYPE,
                trainable=False,
            )
            threshold = self.add_weight(
                name=f"{name}_threshold",
                shape=(),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
            self._masks.append(mask)
            self._thresholds.append(threshold)
            if criteria_lib._needs_gradients(self.criterion):
                self._gradients.append(
                    self.add_weight(
                        name=f"{name}_gradient",
                        shape=weight.shape,
                        initializer="zeros",
                        dtype="float32",
                        trainable=True,
                        autocast=False,
                        aggregation="mean",
                        overwrite_with_gradient=True,
                    )
                )
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        if training is True and not self._step_is_set:
            raise ValueError(
                f"Layer {self.name!r} is being trained, but no pruning step was "
                "set: pruning requires the UpdatePruningStep callback. Pass "
                "`callbacks=[keras_pruning.UpdatePruningStep()]` to `fit()`, or "
                "call its `on_train_begin()` and `on_train_batch_begin()` in a "
                "custom training loop."
            )
        effective = (
            masks_lib._mask_gradient
            if training is True and self._pruned_held_at_zero
            else masks_lib._multiply_by_mask
        )
        values = {
            id(weight): effective(weight, mask)
            for weight, mask in zip(self._prunable_weights, self._masks, strict=True)
        }
        if self._gradients:
            for weight, accumulated in zip(
                self._prunable_weights, self._gradients, strict=True
            ):
                values[id(weight)] = _accumulate_gradient(
                    values[id(weight)], accumulated
                )
        if training is not None:
            kwargs["training"] = training
        outputs, losses = _call_with_values(self, values, inputs, *args, **kwargs)
        for loss in losses:
            self.add_loss(loss)
        return outputs

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        return self.layer.compute_mask(inputs, previous_mask)

    def update_masks(self, sparsity):
        """Recomputes every mask at `sparsity` from the effective weights.

        With `e = w * mask` and the criterion's scores of `e` (`|e|` by
        default), keeps the `k = max(round(n * (1 - sparsity)), 1)` best
        scores (with a `block_size`: the `k` best of `n` blocks by pooled
        score; with `sparsity_m_by_n=(m, g)`: `sparsity` is ignored and each
        group of `g` keeps its `g - m` best) and writes `e * new_mask` into
        the weight. Masked weights score 0 and kept ones at least `2**-126`
        (float32's smallest normal number), so a pruned weight stays pruned
        while sparsity does not decrease, and whatever an optimizer writes at
        pruned positions is reset to 0 (a training step that masks the
        weights multiplies it by 0, so until then it only has to be finite;
        while `UpdatePruningStep` holds pruned weights at 0, the optimizer
        leaves them there). Gradient accumulators restart at 0.
        Runs eagerly, between training steps.

        Raises:
            ValueError: if a kept weight or its score holds NaN or infinity
                (the mask would be meaningless; no mask is changed then; values
                at masked positions are not checked: the update sets them to
                0), or if the
                wrapper's masks are set for the whole model
                (`granularity="channel"` or `global_pruning=True`).
        """
        if self.granularity == "channel" or self.global_pruning:
            setting = (
                "granularity='channel'"
                if self.granularity == "channel"
                else "global_pruning=True"
            )
            raise ValueError(
                f"Layer {self.name!r} is pruned with {setting}: its masks are "
                "set for the whole model by UpdatePruningStep, not per layer. "
                f"Received: sparsity={sparsity!r}"
            )
        if (
            isinstance(sparsity, bool)
            or not (isinstance(sparsity, numbers.Real) and 0.0 <= sparsity < 1.0)
            or math.isnan(sparsity)
        ):
            raise ValueError(
                f"`sparsity` must be a float in [0, 1). Received: sparsity={sparsity!r}"
            )
        sparsity = float(sparsity)
        if self._unstructured:
            _update_unstructured([(self, sparsity)])
            return
        new_masks, thresholds = [], []
        for scores in self._scores():
            if self.sparsity_m_by_n is not None:
                mask, threshold = masks_lib.m_by_n_mask(
                    scores, *self.sparsity_m_by_n, axis=self._channel_axis
                )
            else:
                mask, threshold = masks_lib.block_magnitude_mask(
                    scores, sparsity, self.block_size, self.block_pooling_type
                )
            new_masks.append(mask)
            thresholds.append(threshold)
        self._set_masks(new_masks, thresholds)

    def _criterion_scores(self, weight, mask, gradient):
        """The criterion's float32 scores of the effective weights."""
        return criteria_lib._scores(
            self.criterion,
            masks_lib.apply_mask(weight, mask),
            None if gradient is None else gradient.value,
        )

    def _scores(self):
        """The criterion's float32 score of every prunable weight, as a mask
        update ranks it (`masks._ranking_scores`: 0 where masked, at least
        `2**-126` where kept); ValueError on NaN or infinity, before any mask
        changes.

        Only the effective weights are scored and checked: the update sets
        masked positions to 0."""
        gradients = self._gradients or [None] * len(self._masks)
        found = [
            self._criterion_scores(weight, mask, gradient)
            for weight, mask, gradient in zip(
                self._prunable_weights, self._masks, gradients, strict=True
            )
        ]
        self._raise_if_not_finite([ops.all(ops.isfinite(s)) for s in found])
        return [
            masks_lib._ranking_scores(scores, mask)
            for scores, mask in zip(found, self._masks, strict=True)
        ]

    def _raise_if_not_finite(self, finite):
        """ValueError naming the first weight whose scores are not all finite
        (`finite`: one boolean scalar per prunable weight)."""
        if all(bool(f) for f in finite):
            return
        self._check_finite()
        weight = self._prunable_weights[[bool(f) for f in finite].index(False)]
        raise ValueError(
            f"The pruning scores of weight {weight.path!r} of layer "
            f"{self.layer.name!r} hold NaN or infinite values at pruning "
            f"step {self._pruning_step} (criterion={self.criterion!r}): "
            "the gradients overflowed. Lower the learning rate or use "
            "criterion='magnitude'."
        )

    def _set_masks(self, new_masks, thresholds):
        """Writes masks and thresholds (of `_scores`, reported by
        `masks._reported_threshold`), zeroes the newly pruned weights and
        restarts the gradient accumulators."""
        thresholds = [masks_lib._reported_threshold(t) for t in thresholds]
        new_weights = [
            masks_lib.apply_mask(weight, ops.logical_and(mask.value, new_mask))
            for weight, mask, new_mask in zip(
                self._prunable_weights, self._masks, new_masks, strict=True
            )
        ]
        self._write(new_weights, new_masks, thresholds)

    def _write(self, new_weights, new_masks, thresholds):
        """Assigns weights (newly pruned entries at 0), masks and thresholds,
        and restarts the gradient accumulators."""
        for variables, values in (
            (self._prunable_weights, new_weights),
            (self._masks, new_masks),
            (self._thresholds, thresholds),
        ):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        for accumulated in self._gradients:
            accumulated.assign(ops.zeros(accumulated.shape, accumulated.dtype))

    def _check_finite(self):
        """ValueError if a prunable weight holds NaN or infinity where its mask
        keeps it, before any mask changes: a magnitude mask of such weights
        would be meaningless. Masked positions are not checked: the update sets
        them to 0."""
        for weight, mask in zip(self._prunable_weights, self._masks, strict=True):
            if not bool(ops.all(ops.isfinite(masks_lib.apply_mask(weight, mask)))):
                raise ValueError(
                    f"Weight {weight.path!r} of layer {self.layer.name!r} holds NaN "
                    f"or infinite values at pruning step {self._pruning_step}; "
                    "its magnitude mask would be meaningless. Lower the learning "
                    "rate or check the inputs (for example with "
                    "keras.callbacks.TerminateOnNaN)."
                )

    def masked_weights(self):
        """Returns `[w * mask]` for every prunable weight, as NumPy arrays."""
        return [
            keras.ops.convert_to_numpy(masks_lib.apply_mask(w, m))
            for w, m in zip(self._prunable_weights, self._masks, strict=True)
        ]

    def _write_masked_weights(self):
        for weight, mask in zip(self._prunable_weights, self._masks, strict=True):
            weight.assign(masks_lib.apply_mask(weight, mask))

    def strip(self):
        """Writes `w * mask` into the wrapped layer's weights and returns it."""
        self._write_masked_weights()
        return self.layer

    def save_own_variables(self, store):
        # Keras saves the wrapper before the wrapped layer: zeroing the pruned
        # weights here makes every checkpoint hold sparse weights. A training
        # step multiplies pruned positions by 0 (or holds them at 0 already),
        # so this changes nothing in training.
        self._write_masked_weights()
        super().save_own_variables(store)
        store[_STEP_KEY] = np.asarray(self._pruning_step, dtype="int64")

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        keys = list(store.keys())
        saved = [key for key in keys if key != _STEP_KEY]
        if len(saved) != len(own):
            raise ValueError(
                f"Layer {self.name!r} expected {len(own)} variables (masks and "
                f"thresholds) but the saved file holds {len(saved)}."
            )
        for i, variable in enumerate(own):
            variable.assign(store[f"{i}"])
        if _STEP_KEY in keys:
            self._pruning_step = int(np.asarray(store[_STEP_KEY]))

    def get_config(self):
        config = {
            "pruning_schedule": keras.saving.serialize_keras_object(
                self.pruning_schedule
            ),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_m_by_n": (
                None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n)
            ),
            "granularity": self.granularity,
            "channel_sides": list(self.channel_sides),
            "criterion": criteria_lib._serialize(self.criterion),
            "global_pruning": self.global_pruning,
            "allocation": self.allocation,
            "sparsity_bounds": (
                None if self.sparsity_bounds is None else list(self.sparsity_bounds)
            ),
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["pruning_schedule"] = keras.saving.deserialize_keras_object(
            config["pruning_schedule"], custom_objects=custom_objects
        )
        if "criterion" in config:
            config["criterion"] = criteria_lib._deserialize(
                config["criterion"], custom_objects=custom_objects
            )
        config["channel_sides"] = tuple(config.get("channel_sides", _CHANNEL_SIDES))
        return super().from_config(config, custom_objects=custom_objects)
