"""feynmlp.born: S-wave scattering lengths of step potentials and their Born series.

In: step potentials U of shape (..., N) (U_n on [(n-1) R/N, n R/N), zero beyond R; hbar =
2 mu = 1, U < 0 attractive) and the range R. Out:

- scattering_length(U, R, k=None): exact a, or a(k) = -tan(delta)/k (exact_scattering.py);
- phase_shift(U, k, R), effective_range(U, R), shape_parameter(U, R) (rho = a^2 r_e / 2),
  shape_terms(U, order, R) (Born terms of rho) (finite_energy.py);
- bound_state_count / has_bound_state / is_shallow(U, R): bound states (exact_scattering.py);
- born_terms(U, order, R, k=None): exact Born terms a_1 .. a_order (of a(k) if k is given);
  born_kernels(N, R, order, k=None): the derivatives of a (a(k)) at U = 0 (born_series.py);
- sample_potentials(n, grid, R, seed, ...): random shallow ensembles (potentials.py);
- make_dataset / write_dataset / load_dataset: labelled .npz data sets (dataset.py);
  write_zarr_dataset / load_zarr_dataset: the same as a Zarr group written chunk by chunk
  through Dask, for large sets (zarr_dataset.py; needs the `distributed` extra);
- potential_to_U / U_to_potential / reduced_mass: MeV and fm (units.py);
- TrainConfig / train_network / train_ensemble: PyTorch training with the scalings folded
  into the saved networks (training.py; needs the `train` extra);
- PRESETS / run_iterations / combine: the iterative network perturbation theory
  (perturbation.py); reproduce: the whole experiment with its report (report.py);
  reproduce_energy / ENERGY_PRESETS: the same on inputs (U, k^2) for a(k) (energy_reproduce.py);
- the `feynmlp born` command line (cli.py).

Names are loaded on first use, so that `import feynmlp.born.cli` (run by every `feynmlp`
command) does not import the numerics.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "scattering_length": "exact_scattering",
    "bound_state_count": "exact_scattering",
    "has_bound_state": "exact_scattering",
    "is_shallow": "exact_scattering",
    "scattering_length_and_bound_states": "exact_scattering",
    "phase_shift": "finite_energy",
    "effective_range": "finite_energy",
    "shape_parameter": "finite_energy",
    "shape_terms": "finite_energy",
    "born_terms": "born_series",
    "born_kernels": "born_series",
    "BornKernels": "born_series",
    "sample_potentials": "potentials",
    "FAMILIES": "potentials",
    "DISTRIBUTION": "potentials",
    "make_dataset": "dataset",
    "write_dataset": "dataset",
    "save_dataset": "dataset",
    "load_dataset": "dataset",
    "write_zarr_dataset": "zarr_dataset",
    "load_zarr_dataset": "zarr_dataset",
    "HBARC_MEV_FM": "units",
    "potential_to_U": "units",
    "U_to_potential": "units",
    "reduced_mass": "units",
    "TrainConfig": "training",
    "train_network": "training",
    "train_ensemble": "training",
    "PRESETS": "perturbation",
    "run_iterations": "perturbation",
    "combine": "perturbation",
    "reproduce": "report",
    "reproduce_energy": "energy_reproduce",
    "ENERGY_PRESETS": "energy_reproduce",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'feynmlp.born' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
