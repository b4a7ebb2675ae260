"""Argument checks shared by the Born-series modules.

In: user-supplied values (potential arrays, ranges, counts). Out: the same values converted to
the types the numerics expect, or a `FeynmlpError` that names the bad value and the fix.
Kept in one place so every public function words its errors the same way.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from feynmlp.errors import FeynmlpError


def check_range(R, name: str = "R") -> float:
    """R > 0 and finite, as a Python float."""
    if isinstance(R, bool) or not isinstance(R, numbers.Real) or not math.isfinite(float(R)) or R <= 0:
        raise FeynmlpError(
            f"{name} must be a positive finite number (the range of the potential, in the length "
            f"unit of the problem), got {R!r}")
    return float(R)


def check_positive_int(value, name: str) -> int:
    """value >= 1 and integral (numpy integers accepted), as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise FeynmlpError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_potential(U, name: str = "U") -> np.ndarray:
    """U as a float64 array of shape (..., N), N >= 1, all entries finite."""
    try:
        arr = np.asarray(U, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeynmlpError(
            f"{name} must be an array of real step values of shape (..., N); could not convert "
            f"it to float64 ({exc})") from None
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise FeynmlpError(
            f"{name} must have shape (..., N) with N >= 1 steps on its last axis, got shape "
            f"{arr.shape}; pass a 1-D array of step values for one potential")
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise FeynmlpError(
            f"{name} has a non-finite step value {arr[bad]!r} at index {bad}; step potentials "
            "must be finite (replace NaN/inf, e.g. clip a hard core to a large finite value)")
    return arr
