"""Learning-rate schedules: callables ``step -> learning rate``, usable as an optimizer's
``learning_rate``. ``step`` counts optimizer updates (batches) made so far, starting at 0."""
from __future__ import annotations

import math
from typing import Any, Union

from ._checks import check_bool, check_positive, check_positive_int


class LearningRateSchedule:
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepDecay(LearningRateSchedule):
    """``initial_learning_rate * gamma ** (step // step_size)`` (PyTorch's StepLR, counted in
    updates)."""

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1):
        self.initial_learning_rate = check_positive(initial_learning_rate, "initial_learning_rate")
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = check_positive(gamma, "gamma")

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with ``staircase`` the
    exponent is rounded down (Keras' ExponentialDecay)."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False):
        self.initial_learning_rate = check_positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = check_positive(decay_steps, "decay_steps")
        self.decay_rate = check_positive(decay_rate, "decay_rate")
        self.staircase = check_bool(staircase, "staircase")

    def __call__(self, step: int) -> float:
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return self.initial_learning_rate * self.decay_rate ** exponent


class CosineDecay(LearningRateSchedule):
    """Cosine from ``initial_learning_rate`` down to ``alpha * initial_learning_rate`` over
    ``decay_steps`` updates, then constant (Keras' CosineDecay without warm-up)."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0):
        self.initial_learning_rate = check_positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = check_positive(decay_steps, "decay_steps")
        self.alpha = float(alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; received alpha={alpha}")

    def __call__(self, step: int) -> float:
        progress = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


SCHEDULES = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict[str, Any]:
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict[str, Any]) -> LearningRateSchedule:
    cls = SCHEDULES.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {config.get('class_name')!r}; "
                         f"expected one of {sorted(SCHEDULES)}")
    return cls.from_config(config.get("config", {}))


LearningRate = Union[float, LearningRateSchedule]
