"""Loss gradients for gradient-based criteria, on each Keras backend."""

import keras
import numpy as np

from keras_pruning.analysis import _check_data as _check_pair


def _check_data(data):
    if data is None:
        raise ValueError(
            "importance='taylor' needs `data=(x, y)`: arrays of inputs and "
            "labels to compute the loss gradient on. Received: data=None"
        )
    return _check_pair(data)


def _resolve_loss(model, loss):
    if loss is None:
        loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "importance='taylor' needs a loss: pass `loss=` (a Keras loss name, "
            "instance or function) or compile the model. Received: loss=None"
        )
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    # A loss function (a name resolves to one) returns one value per sample;
    # JAX and PyTorch differentiate scalars only. Loss objects average too.
    return lambda y, y_pred: keras.ops.mean(loss(y, y_pred))


def loss_gradients(model, variables, data, loss, batch_size=32):
    """`{id(variable): sum over batches of dL/dvariable}` as NumPy arrays."""
    x, y = _check_data(data)
    loss_fn = _resolve_loss(model, loss)
    totals = {id(v): np.zeros(v.shape, dtype="float32") for v in variables}
    compute = _BACKENDS[keras.backend.backend()]
    for start in range(0, len(x), batch_size):
        batch = (x[start : start + batch_size], y[start : start + batch_size])
        for variable, gradient in zip(
            variables, compute(model, variables, batch, loss_fn), strict=True
        ):
            totals[id(variable)] += keras.ops.convert_to_numpy(gradient)
    return totals


def _tensorflow(model, variables, batch, loss_fn):
    import tensorflow as tf

    x, y = batch
    with tf.GradientTape() as tape:
        tape.watch([v.value for v in variables])  # frozen weights too
        value = loss_fn(y, model(x, training=False))
    return tape.gradient(value, [v.value for v in variables])


def _jax(model, variables, batch, loss_fn):
    import jax

    x, y = batch
    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
    wanted = {id(v): i for i, v in enumerate(variables)}

    def loss_of(chosen):
        def value(v):
            return chosen[wanted[id(v)]] if id(v) in wanted else v.value

        outputs, _ = model.stateless_call(
            [value(v) for v in trainable],
            [value(v) for v in non_trainable],
            x,
            training=False,
        )
        return loss_fn(y, outputs)

    # Only the asked-for variables are differentiated: masks are booleans.
    return list(jax.grad(loss_of)([v.value for v in variables]))


def _torch(model, variables, batch, loss_fn):
    import torch

    x, y = batch
    tensors = [v.value for v in variables]
    frozen = [t for t in tensors if not t.requires_grad]
    for tensor in frozen:  # frozen weights too
        tensor.requires_grad_(True)
    try:
        value = loss_fn(y, model(x, training=False))
        return torch.autograd.grad(value, tensors, materialize_grads=True)
    finally:
        for tensor in frozen:
            tensor.requires_grad_(False)


_BACKENDS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
