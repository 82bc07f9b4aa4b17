"""Reading and writing a model's variables from a callback, on every backend."""


def sync_trainer_state(model):
    """Makes `model`'s variables current, so a callback can read or assign them.

    During `fit` on JAX, the trainer keeps the variables' values in its own
    state and detaches them from the variables. `jax_state_sync()` writes that
    state back and marks it synced, so the trainer re-reads the variables,
    assignments made after the sync included, before its next step (Keras's
    `Callback.model` property does the same). On the other backends the
    variables are always current: nothing to do.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
