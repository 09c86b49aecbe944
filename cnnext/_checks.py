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


def check_count(value: Any, name: str) -> int:
    """``value`` as an int >= 1: an integer (bool excluded) or an integral float such as 10.0
    (TypeError for other types, ValueError naming ``name`` otherwise)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float,
                                                                     np.floating)):
        raise TypeError(f"{name} must be an integer >= 1; received {name}={value!r}")
    if not (math.isfinite(value) and value == int(value) and value >= 1):
        raise ValueError(f"{name} must be an integer >= 1; received {name}={value!r}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    """``value`` as a float, which must be finite and > 0 (ValueError naming ``name``)."""
    value = float(value)
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0; received {name}={value}")
    return value
