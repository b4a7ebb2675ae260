"""MeV/fm conversions of the Born toolkit."""
from __future__ import annotations

import math

import numpy as np
import pytest

from feynmlp.born import HBARC_MEV_FM, U_to_potential, potential_to_U, reduced_mass, scattering_length
from feynmlp.errors import FeynmlpError


def test_values():
    assert HBARC_MEV_FM == 197.3269804
    mu = reduced_mass(938.27208816, 939.56542052)  # proton, neutron rest energies (MeV)
    assert mu == pytest.approx(469.45915, abs=1e-5)
    # U = 2 mu V / (hbar c)^2: -1 MeV for the np system is -0.024112 fm^-2
    assert potential_to_U(-1.0, mu) == pytest.approx(-2 * 469.45915 / 197.3269804 ** 2, rel=1e-6)
    V = np.array([[-35.0, 0.0, 12.5]])
    np.testing.assert_allclose(U_to_potential(potential_to_U(V, mu), mu), V, rtol=1e-15)
    assert potential_to_U(V, mu).shape == (1, 3)


def test_physical_square_well():
    # A square well of range 2 fm binds its first np state at V0 = (pi/2)^2 (hbar c)^2 / (2 mu R^2)
    mu = reduced_mass(938.27208816, 939.56542052)
    R = 2.0
    V_threshold = (math.pi / 2) ** 2 * HBARC_MEV_FM ** 2 / (2 * mu * R ** 2)
    assert V_threshold == pytest.approx(25.58, abs=0.01)
    U = potential_to_U(np.full(64, -0.999 * V_threshold), mu)
    assert scattering_length(U, R) < -100  # fm: just below threshold, a large and negative


@pytest.mark.parametrize("mu", [0, -1.0, float("nan"), "939"])
def test_bad_mass(mu):
    with pytest.raises(FeynmlpError, match="rest energy in MeV"):
        potential_to_U(1.0, mu)
