"""Pruning schedules: when to update masks, and to which sparsity.

A schedule is a pure function of the training step. `schedule(step)` returns
`(should_prune, sparsity)`, where `step` counts training batches from 1.
"""

import abc
import math
import numbers

import keras

__all__ = ("PruningSchedule", "ConstantSparsity", "PolynomialDecay")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer >= {minimum}. "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value}"
        )
    return int(value)


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a float in [0, 1). "
            f"Received: {name}={value!r} (of type {type(value).__name__})"
        )
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value}"
        )
    return float(value)


class PruningSchedule(abc.ABC):
    """Base class of pruning schedules.

    Subclasses implement `__call__(step) -> (should_prune, sparsity)` and
    `get_config()`. The default `should_prune` rule, shared with TFMOT, is:

        should_prune = begin_step <= step
                       and (step <= end_step or end_step == -1)
                       and (step - begin_step) % frequency == 0

    Subclasses with a finite `end_step` also prune at `end_step` itself, so
    the final sparsity is always reached (TFMOT misses it when
    `end_step - begin_step` is not a multiple of `frequency`).
    """

    begin_step: int
    end_step: int
    frequency: int

    def _should_prune(self, step):
        if step < self.begin_step:
            return False
        if self.end_step != -1 and step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    @staticmethod
    def _check_step(step):
        if isinstance(step, numbers.Integral) and not isinstance(step, bool):
            return int(step)
        try:
            as_int = int(step)  # eager integer tensors
        except (TypeError, ValueError):
            as_int = None
        if as_int is None or isinstance(step, (bool, float)) or as_int != step:
            raise TypeError(f"`step` must be an integer. Received: step={step!r}")
        return as_int

    @abc.abstractmethod
    def __call__(self, step):
        """Returns `(should_prune, sparsity)` at training step `step`."""

    @abc.abstractmethod
    def sparsity(self, step):
        """Returns the scheduled sparsity at `step`."""

    @abc.abstractmethod
    def get_config(self):
        """Returns the constructor arguments as a flat dict."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="keras_pruning")
class ConstantSparsity(PruningSchedule):
    """Prunes to `target_sparsity` every `frequency` steps.

    `sparsity(step) = target_sparsity` whenever `should_prune(step)` holds.

    Args:
        target_sparsity: fraction of weights to prune, in [0, 1).
        begin_step: first step at which masks are updated. Defaults to `0`.
        end_step: last step at which masks are updated, or `-1` for no end.
            Defaults to `-1`.
        frequency: steps between mask updates. Defaults to `100`.

    Examples:
        >>> schedule = ConstantSparsity(0.5, begin_step=0, frequency=10)
        >>> schedule(10)
        (True, 0.5)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        begin_step = _check_int("begin_step", begin_step, 0)
        end_step = _check_int("end_step", end_step, -1)
        if end_step != -1 and end_step < begin_step:
            raise ValueError(
                "`end_step` must be -1 (no end) or >= `begin_step`. "
                f"Received: end_step={end_step}, begin_step={begin_step}"
            )
        frequency = _check_int("frequency", frequency, 1)
        self.target_sparsity = target_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def sparsity(self, step):
        """Returns the scheduled sparsity at `step`: always `target_sparsity`."""
        self._check_step(step)
        return self.target_sparsity

    def __call__(self, step):
        step = self._check_step(step)
        return self._should_prune(step), self.target_sparsity

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_pruning")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity` polynomially.

        p = clip((step - begin_step) / (end_step - begin_step), 0, 1)
        sparsity = final_sparsity
                   + (initial_sparsity - final_sparsity) * (1 - p) ** power

    Masks are updated every `frequency` steps from `begin_step`, and also at
    `end_step`, so `final_sparsity` is always reached.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1).
        final_sparsity: sparsity from `end_step` on, in [0, 1).
        begin_step: first step at which masks are updated.
        end_step: step at which `final_sparsity` is reached; `> begin_step`.
        power: exponent of the decay. Defaults to `3`.
        frequency: steps between mask updates. Defaults to `100`.

    Examples:
        >>> schedule = PolynomialDecay(0.2, 0.8, begin_step=100, end_step=110,
        ...                            power=3, frequency=2)
        >>> [round(schedule(s)[1], 4) for s in (100, 102, 105, 110)]
        [0.2, 0.4928, 0.725, 0.8]
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        begin_step = _check_int("begin_step", begin_step, 0)
        end_step = _check_int("end_step", end_step, 0)
        if end_step <= begin_step:
            raise ValueError(
                "`end_step` must be greater than `begin_step`. "
                f"Received: end_step={end_step}, begin_step={begin_step}"
            )
        if isinstance(power, bool) or not isinstance(power, numbers.Real):
            raise TypeError(
                f"`power` must be a positive number. Received: power={power!r}"
            )
        if not 0 < power < math.inf:
            raise ValueError(
                f"`power` must be a positive number. Received: power={power}"
            )
        frequency = _check_int("frequency", frequency, 1)
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.power = int(power) if isinstance(power, numbers.Integral) else float(power)
        self.frequency = frequency

    def sparsity(self, step):
        """Returns the scheduled sparsity at `step`, whether or not masks update."""
        step = self._check_step(step)
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        if progress <= 0.0:
            return self.initial_sparsity
        if progress >= 1.0:
            return self.final_sparsity
        sparsity = self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * ((1.0 - progress) ** self.power)
        # Rounding must not step outside [initial, final].
        low, high = sorted((self.initial_sparsity, self.final_sparsity))
        return min(max(sparsity, low), high)

    def __call__(self, step):
        step = self._check_step(step)
        return self._should_prune(step), self.sparsity(step)

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
