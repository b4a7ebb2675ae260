"""Conversions between physical units (MeV, fm) and the hbar = 2 mu = 1 units of feynmlp.born.

In: potentials V in MeV (on a grid whose lengths are in fm) and a reduced mass in MeV (i.e. the
rest energy mu c^2). Out: U = 2 mu V / (hbar c)^2 in fm^-2, which `scattering_length`,
`born_terms` and the data sets take as input together with R in fm; scattering lengths and
Born terms then come out in fm. Lengths need no conversion: they keep whatever unit R has.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from feynmlp.errors import FeynmlpError

__all__ = ["HBARC_MEV_FM", "potential_to_U", "U_to_potential", "reduced_mass"]

#: hbar c in MeV fm (CODATA 2018, exact to the digits given).
HBARC_MEV_FM = 197.3269804


def _check_mass(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(float(value)) and value > 0):
        raise FeynmlpError(
            f"{name} must be a positive rest energy in MeV (e.g. 938.918754 / 2 for two nucleons), "
            f"got {value!r}")
    return float(value)


def reduced_mass(m1_MeV: float, m2_MeV: float) -> float:
    """mu = m1 m2 / (m1 + m2), in MeV, from two rest energies in MeV."""
    m1 = _check_mass(m1_MeV, "m1_MeV")
    m2 = _check_mass(m2_MeV, "m2_MeV")
    return m1 * m2 / (m1 + m2)


def potential_to_U(V_MeV, mu_MeV: float) -> np.ndarray:
    """U = 2 mu V / (hbar c)^2 in fm^-2, from V in MeV and the reduced mass mu c^2 in MeV.

    Args:
        V_MeV: potential values in MeV, any shape (negative = attractive).
        mu_MeV: reduced mass (rest energy) in MeV, e.g. `reduced_mass(938.272, 939.565)`
            for the neutron-proton system.

    Returns:
        U in fm^-2, same shape, float64 (a NumPy float for a scalar V).
    """
    mu = _check_mass(mu_MeV, "mu_MeV")
    V = np.asarray(V_MeV, dtype=np.float64)
    U = (2.0 * mu / HBARC_MEV_FM ** 2) * V
    return U[()] if U.ndim == 0 else U


def U_to_potential(U_fm2, mu_MeV: float) -> np.ndarray:
    """The inverse of `potential_to_U`: V = (hbar c)^2 U / (2 mu) in MeV from U in fm^-2."""
    mu = _check_mass(mu_MeV, "mu_MeV")
    U = np.asarray(U_fm2, dtype=np.float64)
    V = (HBARC_MEV_FM ** 2 / (2.0 * mu)) * U
    return V[()] if V.ndim == 0 else V
