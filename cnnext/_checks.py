"""Argument checks shared by layers, losses, optimizers and schedules."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; TypeError for anything else (a string such as ``"no"`` included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; received {name}={value!r}")
    return bool(value)


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1: an integer (bool excluded) or a whole float such as 10.0
    (ValueError naming ``name`` for anything else)."""
    whole = isinstance(value, (float, np.floating)) and float(value).is_integer()
    if (isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, np.integer)) or whole)
            or value < 1):
        raise ValueError(f"{name} must be a positive int; received {name}={value!r}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float, which must be finite and > 0 (ValueError naming ``name``)."""
    value = float(value)
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0; received {name}={value}")
    return value
