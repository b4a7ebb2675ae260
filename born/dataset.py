"""Labelled data sets of step potentials: exact scattering lengths and Born terms, as .npz files.

In: the ensemble's arguments (size, grid N, range R, seed, families, depth range, filters; see
`feynmlp.born.potentials`) and the highest Born order. Out: `make_dataset` returns
(arrays, metadata); `write_dataset` stores them in one .npz file, atomically; `load_dataset`
reads such a file back with `np.load(allow_pickle=False)`.

Arrays in the file:
    U          float64 (size, N)    step values, hbar = 2 mu = 1, U[:, n] on [n R/N, (n+1) R/N)
    a          float64 (size,)      exact scattering length (same length unit as R)
    born       float64 (size, K)    Born terms: born[:, k-1] = a_k, of degree k in U
    family     str     (size,)      the ensemble family each row was drawn from
    metadata_json uint8 (bytes,)    UTF-8 JSON: grid, R, seed, distribution, version, ...
With energies (wave numbers k_1 .. k_E, `feynmlp.born.finite_energy`), also:
    k          float64 (E,)         the wave numbers (inverse length unit of R; E = k^2)
    a_k        float64 (size, E)    a(k) = -tan(delta(k))/k (a itself where k = 0)
    born_k     float64 (size, E, K) Born terms of a(k): born_k[:, e, j-1] = a_j(k_e)
With a distribution of energies ("uniform:LO:HI": one k per row, uniform in [LO, HI], drawn
from numpy's default_rng(SeedSequence([seed, 101])), a stream of its own), instead:
    k          float64 (size,)      each row's wave number
    a_k        float64 (size,)      a(k) of the row at its own k
    born_k     float64 (size, K)    born_k[:, j-1] = a_j(k) of the row at its own k
Only plain arrays are written (no pickled objects), so files are safe to load from anyone.
"""
from __future__ import annotations

import errno
import json
import math
import os
import sys

import numpy as np

from feynmlp.errors import FeynmlpError
from feynmlp.files import atomic_writer, check_output_file

from ._checks import check_positive_int
from .born_series import born_terms
from .exact_scattering import scattering_length
from .potentials import (DEFAULT_A_MAX, DISTRIBUTION, FAMILIES, check_sampling_arguments,
                         sample_potentials_with_a)

__all__ = ["FORMAT", "FORMAT_VERSION", "make_dataset", "write_dataset", "save_dataset", "load_dataset"]

FORMAT = "feynmlp.born.dataset"
FORMAT_VERSION = 1
_ARRAYS = ("U", "a", "born", "family")
_ENERGY_ARRAYS = ("k", "a_k", "born_k")  # present only in data sets made with energies
_LABEL_CHUNK = 8192  # rows per progress-bar update while computing Born terms

_ARRAY_DOCS = {
    "U": "step values U_n (hbar = 2 mu = 1, inverse length squared), shape (size, grid); "
         "U[:, n] is the value on [n R/grid, (n+1) R/grid), zero for r >= R",
    "a": "exact S-wave scattering length, shape (size,), length unit of R; a < 0 for weak attraction",
    "born": "Born terms, shape (size, order): born[:, k-1] = a_k, homogeneous of degree k in U",
    "family": "ensemble family of each row (see distribution)",
    "k": "wave numbers k >= 0, shape (E,), inverse length unit of R (energy E = k^2 in units "
         "hbar = 2 mu = 1)",
    "a_k": "a(k) = -tan(delta(k))/k, shape (size, E), length unit of R; tends to a as k -> 0",
    "born_k": "Born terms of a(k), shape (size, E, order): born_k[:, e, j-1] = a_j(k[e]), "
              "homogeneous of degree j in U",
}
_ROW_ENERGY_DOCS = {
    "k": "each row's wave number k >= 0, shape (size,), inverse length unit of R (energy E = "
         "k^2 in units hbar = 2 mu = 1), drawn from the distribution in metadata 'energies'",
    "a_k": "a(k) = -tan(delta(k))/k of each row at its own k, shape (size,), length unit of R",
    "born_k": "Born terms of a(k) of each row at its own k, shape (size, order): born_k[:, j-1] "
              "= a_j(k), homogeneous of degree j in U",
}
_ENERGY_STREAM = 101  # SeedSequence([seed, 101]) draws the per-row k; families use 0 .. 6


def _version() -> str:
    from feynmlp import __version__
    return __version__


def make_dataset(size, grid=64, R=1.0, seed=0, families=None, depth_range=None, repulsive=False,
                 shallow=True, a_max=DEFAULT_A_MAX, order=3, progress=False, energies=None):
    """Draw `size` potentials and label them with a and the Born terms a_1 .. a_order.

    Args:
        size, grid, R, seed, families, depth_range, repulsive, shallow, a_max: as in
            `feynmlp.born.potentials.sample_potentials` (grid is the number of steps N).
        order: highest Born term (default 3).
        progress: show a tqdm progress bar on stderr (only when stderr is a terminal).
        energies: None, or wave numbers k >= 0 (a sequence; inverse length unit of R) at which
            to add a(k) and its Born terms a_1(k) .. a_order(k) (arrays k, a_k, born_k), or
            the text "uniform:LO:HI": one k per row, uniform in [LO, HI] and seeded by seed,
            with a(k) and the Born terms of the row at its own k (k, a_k, born_k per row).

    Returns:
        (arrays, metadata): arrays is a dict with U, a, born, family (and k, a_k, born_k with
        energies; see the module docstring); metadata is a JSON-serialisable dict (grid, R,
        seed, the distribution, the feynmlp version, ...).

    Raises:
        FeynmlpError: a bad argument (checked before any work is done).
    """
    size, grid, R, seed, weights, depth_range, a_max = check_sampling_arguments(
        size, grid, R, seed, families, depth_range, a_max)
    order = check_positive_int(order, "order (the highest Born term)")
    k = check_energies(energies)
    spread = isinstance(k, tuple)
    steps = 2 if k is None else 3 if spread else 2 + k.size
    bar = _progress_bar(progress, total=steps * size)
    try:
        U, labels, a = sample_potentials_with_a(
            size, grid, R, seed, weights, depth_range, repulsive, shallow, a_max,
            _progress=bar.update)
        born = np.empty((size, order))
        for start in range(0, size, _LABEL_CHUNK):
            stop = min(start + _LABEL_CHUNK, size)
            born[start:stop] = born_terms(U[start:stop], order, R)
            bar.update(stop - start)
        if spread:
            low, high = k
            k = np.random.default_rng(np.random.SeedSequence([seed, _ENERGY_STREAM])).uniform(
                low, high, size)
        if k is not None:
            # One k per row (spread), or every listed k for every row.
            per_row = () if spread else (k.size,)
            a_k = np.empty((size,) + per_row)
            born_k = np.empty((size,) + per_row + (order,))
            for start in range(0, size, _LABEL_CHUNK):
                stop = min(start + _LABEL_CHUNK, size)
                rows, at = (U[start:stop], k[start:stop]) if spread else (U[start:stop, None, :], k)
                a_k[start:stop] = scattering_length(rows, R, at)
                born_k[start:stop] = born_terms(rows, order, R, k=at)
                bar.update((stop - start) * (1 if spread else k.size))
    finally:
        bar.close()
    metadata = dataset_metadata(size, grid, R, seed, weights, depth_range, repulsive, shallow, a_max, order)
    arrays = {"U": U, "a": a, "born": born, "family": labels}
    if k is not None:
        arrays.update(k=k, a_k=a_k, born_k=born_k)
        if spread:
            metadata["energies"] = {"distribution": "uniform", "low": low, "high": high,
                                    "per_row": True,
                                    "stream": f"default_rng(SeedSequence([seed, {_ENERGY_STREAM}]))"}
            docs = _ROW_ENERGY_DOCS
        else:
            metadata["energies"] = [float(x) for x in k]
            docs = _ARRAY_DOCS
        metadata["energies_unit"] = "wave number k in 1/length (unit of R); energy E = k^2"
        metadata["arrays"].update({name: docs[name] for name in _ENERGY_ARRAYS})
    return arrays, metadata


def dataset_metadata(size, grid, R, seed, weights, depth_range, repulsive, shallow, a_max, order) -> dict:
    """The metadata of a data set, from its checked arguments (JSON-serialisable)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feynmlp_version": _version(),
        "size": size,
        "grid": grid,
        "R": R,
        "seed": seed,
        "order": order,
        "families": weights,
        "family_descriptions": {f: FAMILIES[f][1] for f in weights},
        "depth_range": list(depth_range),
        "depth_range_unit": "max_n |U_n| in units of 1/R^2 (yukawa: |U(b)|)",
        "repulsive": bool(repulsive),
        "shallow": bool(shallow),
        "a_max": a_max,
        "a_max_unit": "R",
        "distribution": DISTRIBUTION,
        "units": "hbar = 2 mu = 1: U = 2 mu V / hbar^2 in 1/length^2; R and a in one length unit",
        "arrays": {name: _ARRAY_DOCS[name] for name in _ARRAYS},
    }


def check_energies(energies):
    """None; the wave numbers as a 1-D float64 array of finite values >= 0 (at least one); or,
    for the text "uniform:LO:HI", the pair (LO, HI) with 0 <= LO < HI finite."""
    if energies is None:
        return None
    if isinstance(energies, str):
        return parse_energy_distribution(energies)
    from .finite_energy import check_wave_numbers
    k = check_wave_numbers(energies, "energies")
    if k.ndim != 1 or k.size == 0:
        raise FeynmlpError(
            f"energies must be a non-empty list of wave numbers k >= 0, got shape {k.shape}; "
            "e.g. energies=[0.5, 1.0, 2.0]")
    return k


def parse_energy_distribution(text: str) -> tuple[float, float]:
    """"uniform:LO:HI" (wave numbers, inverse length unit of R) as (LO, HI), 0 <= LO < HI."""
    usage = ("give a distribution of k as uniform:LO:HI with 0 <= LO < HI (e.g. uniform:0:3), "
             "or a list of wave numbers K1,K2,...")
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3 or parts[0] != "uniform":
        raise FeynmlpError(f"energies {text!r} is not a distribution of k; {usage}")
    try:
        low, high = float(parts[1]), float(parts[2])
    except ValueError:
        raise FeynmlpError(f"energies {text!r}: LO and HI must be numbers; {usage}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise FeynmlpError(f"energies {text!r}: need finite 0 <= LO < HI, got LO = {low!r}, "
                           f"HI = {high!r}; {usage}")
    return low, high


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay clean).
    return tqdm(total=total, unit="row", file=sys.stderr, disable=None,
                desc="sample, then label", leave=False)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def check_output_path(out) -> str:
    """The absolute path `out`, after checking it ends in .npz and its folder is writable."""
    if not isinstance(out, (str, os.PathLike)):
        raise FeynmlpError(f"the output path must be a string, got {out!r}")
    path = os.path.abspath(os.fspath(out))
    if not path.endswith(".npz"):
        raise FeynmlpError(
            f"the output file {os.fspath(out)!r} must end in .npz (NumPy's archive format); "
            f"use e.g. {os.path.splitext(os.fspath(out))[0] or 'data'}.npz")
    if os.path.isdir(path):
        raise FeynmlpError(f"the output path {path!r} is a folder; give a file name ending in .npz")
    # A symbolic link is checked (and later written) at the file it leads to; a FIFO or a
    # character device needs no folder. The probe is a real file: os.access says yes to root
    # even on read-only file systems and in /proc.
    check_output_file(path, advice="choose a writable folder")
    return path


def save_dataset(path, arrays: dict, metadata: dict) -> str:
    """Write arrays and metadata to `path` (.npz) atomically; returns the absolute path.

    The file is written to a temporary file in the same folder and moved into place with
    os.replace, so a reader never sees half a file; on any failure (a full disk included) the
    temporary file is removed and nothing is left behind. Through a symbolic link the file it
    leads to is replaced; a FIFO or a character device is written in place
    (feynmlp.files.atomic_writer).
    """
    path = check_output_path(path)
    payload = {name: np.ascontiguousarray(arrays[name])
               for name in _ARRAYS + _ENERGY_ARRAYS if name in arrays}
    for name, value in payload.items():
        if value.dtype == object:
            raise FeynmlpError(f"array {name!r} has dtype object, which only pickle can store; "
                               "convert it to a numeric or str dtype")
    payload["metadata_json"] = np.frombuffer(
        json.dumps(metadata, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    try:
        with atomic_writer(path) as handle:
            np.savez(handle, **payload)
    except OSError as exc:
        hint = ("the disk is full; free some space or write elsewhere"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder and try again")
        raise FeynmlpError(f"could not write {path!r}: {exc.strerror or exc}; {hint}") from None
    return path


def write_dataset(out, size, grid=64, R=1.0, seed=0, families=None, depth_range=None,
                  repulsive=False, shallow=True, a_max=DEFAULT_A_MAX, order=3, progress=False,
                  energies=None):
    """`make_dataset` then `save_dataset` to `out`; every argument is checked before any work.

    Returns:
        The absolute path written.
    """
    check_sampling_arguments(size, grid, R, seed, families, depth_range, a_max)
    check_positive_int(order, "order (the highest Born term)")
    check_energies(energies)
    check_output_path(out)
    arrays, metadata = make_dataset(size, grid, R, seed, families, depth_range, repulsive, shallow,
                                    a_max, order, progress, energies)
    return save_dataset(out, arrays, metadata)


def load_dataset(path):
    """Read a data set written by `write_dataset` (without pickle).

    Returns:
        (arrays, metadata): arrays a dict with U, a, born, family (and k, a_k, born_k when the
        file was made with energies; NumPy arrays); metadata the dict stored with them.

    Raises:
        FeynmlpError: the file is missing, not an .npz archive, or not a feynmlp data set.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [k for k in _ARRAYS + ("metadata_json",) if k not in names]
            if missing:
                raise FeynmlpError(
                    f"{path!r} is not a feynmlp Born data set (missing arrays {missing}); write one "
                    "with `feynmlp born dataset`")
            arrays = {name: npz[name] for name in _ARRAYS + _ENERGY_ARRAYS if name in names}
            raw = npz["metadata_json"]
    except FileNotFoundError:
        raise FeynmlpError(f"data set {path!r} does not exist; check the path") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, FeynmlpError):
            raise
        raise FeynmlpError(f"cannot read {path!r} as an .npz data set ({exc})") from None
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeynmlpError(f"the metadata of {path!r} is damaged ({exc}); regenerate the file") from None
    if metadata.get("format") != FORMAT:
        raise FeynmlpError(f"{path!r} has format {metadata.get('format')!r}, expected {FORMAT!r}")
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise FeynmlpError(
            f"{path!r} has data set format version {metadata['format_version']}, newer than this "
            f"feynmlp ({FORMAT_VERSION}); upgrade feynmlp")
    return arrays, metadata
