"""Network perturbation theory of a(k): networks on (U_1 .. U_N, k^2), expanded in U at fixed k.

In: an `EnergyPreset` (grid N, range R, the k range of the training data, the test wave
numbers, the test ensemble, one `IterationSpec` per iteration) and an output folder. Out:
`reproduce_energy(preset, out)` writes report.md, metrics.json, PNG figures and the networks
(models/iteration-K/member-M.safetensors) and returns the metrics.

The networks (docs/energy.md): inputs (U_1, ..., U_N, k^2) in that order, in the toolkit's
units (U in 1/length^2, k^2 in 1/length^2 of the same length); output a(k) = -tan(delta)/k in
the length unit of R. Training potentials are drawn as in `feynmlp.born.perturbation`
(shapes of every family or of the iteration's families, which may be weighted; random sign,
depth log-uniform, shallow, |a| <= a_max R), each with one wave number k R uniform in
[0, kR_max], so that k -> 0 is part of the data; rows with |a(k)| > a_max R (near a pole of
tan(delta)) are dropped.

Perturbation theory in U at fixed k:
- iteration 1 trains f1 on a(k);
- iteration k > 1 trains f_k on a(k) - sum_{j<k} T_j[f_j](U; k^2), with T_j the Taylor
  polynomial of degree j of the ensemble mean in the U inputs only (`wrt` = the U inputs),
  at (U = 0, k^2): the coefficients of t -> f_j(t U, k^2), each row at its own k^2;
- the learned a_j(k) of a test potential is the t^j coefficient of f_j(t U, k^2);
- e1(k) = |grad_U f1(0, k^2) - d a(k)/dU| / |d a(k)/dU|;
- rho_1: a(k) = a + rho k^2 + ..., so d^2 f1 / d(k^2) dU_n at (0, 0) is the kernel of
  rho_1 = -int U r^4 dr / 3, and rho_1(U) learned = that kernel . U.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from feynmlp.errors import FeynmlpError
from feynmlp.files import atomic_write, check_output_folder

from .perturbation import _ROUGH, IterationSpec, preset_config, training_potentials
from .training import train_ensemble

__all__ = ["EnergyPreset", "ENERGY_PRESETS", "ENERGY_GOALS", "get_energy_preset",
           "energy_training_data", "energy_targets", "reproduce_energy", "family_weights",
           "k_balance_factor"]

# (metric, bound, description); a metric given per k is met when it is met at every k.
ENERGY_GOALS = (
    ("born_median_rel_err_k.1", 0.02, "learned a_1(k), median relative error, at every k <= 2 %"),
    ("born_median_rel_err_k.2", 0.10, "learned a_2(k), median relative error, at every k <= 10 %"),
    ("e1_k", 0.03, "e1(k) = |grad_U f1(0, k^2) - d a(k)/dU| / |d a(k)/dU| at every k <= 3 %"),
    ("rho1_median_rel_err", 0.05, "learned rho_1, median relative error <= 5 %"),
)


def family_weights(families):
    """An iteration's families as `sample_potentials` takes them: None (all, equal shares), a
    list of names (equal shares), or, from (name, weight) pairs, a dict {name: weight}."""
    if not families:
        return None
    if all(isinstance(f, str) for f in families):
        return list(families)
    try:
        return {str(name): float(weight) for name, weight in families}
    except (TypeError, ValueError):
        raise FeynmlpError(f"families must be names or (name, weight) pairs, got {families!r}") from None


@dataclass(frozen=True)
class EnergyPreset:
    """A finite-energy experiment.

    Attributes:
        name, description: shown in the report.
        iterations: one `IterationSpec` per order (its size, depth range, config, members,
            weight_power, families as in `feynmlp.born.perturbation`; families may also be
            (name, weight) pairs, drawn in proportion to the weights, see `family_weights`).
        grid, R: the grid of the potentials.
        kR_max: training wave numbers k R are uniform in [0, kR_max]; above the largest of
            test_kR, so that every reported k lies inside the data, not at their edge.
        test_kR: the wave numbers k R at which the Born terms and e1 are reported.
        test_size, test_depth_range: the test ensemble (shallow attractive, default families).
        a_max: |a| and |a(k)| above a_max R are dropped from the training data.
        seed: seeds everything.
        k_balance: per iteration (missing: 0), the exponent gamma of `k_balance_factor`, which
            evens out the loss over k where the targets shrink with k.
    """

    name: str
    iterations: tuple
    grid: int = 64
    R: float = 1.0
    kR_max: float = 3.0
    test_kR: tuple = (0.0, 1.0, 2.0, 3.0)
    test_size: int = 1000
    test_depth_range: tuple = (1e-2, 1.0)
    a_max: float = 3.0
    seed: int = 0
    description: str = ""
    k_balance: tuple = ()

    def __post_init__(self):
        if not self.iterations:
            raise FeynmlpError("an energy preset needs at least one iteration")
        if any(not (math.isfinite(g) and g >= 0) for g in self.k_balance):
            raise FeynmlpError(f"k_balance must hold numbers >= 0, got {self.k_balance!r}")
        if not (math.isfinite(self.kR_max) and self.kR_max > 0):
            raise FeynmlpError(f"kR_max must be a positive number, got {self.kR_max!r}")

    def replace(self, **changes) -> "EnergyPreset":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["iterations"] = [
            {"size": it.size, "depth_range": list(it.depth_range), "members": it.members,
             "weight_power": it.weight_power, "config": it.config.as_dict(),
             "families": family_weights(it.families)}
            for it in self.iterations]
        out["test_kR"] = list(self.test_kR)
        out["test_depth_range"] = list(self.test_depth_range)
        return out



# Iteration 1 draws the independent-steps family three times as often as each smooth one. The
# error of grad_U f1(0, k^2) that e1 measures was mostly in the rough directions of U space,
# which only that family excites; tripling its share lowered e1 at k R = 3 from about 8 % to
# 4 % (one network on 15k potentials, 200 Adam epochs), with the learned a_1(k) of the smooth
# test potentials unchanged (docs/energy.md).
_STEPS_HEAVY = (("fourier", 1.0), ("square", 1.0), ("exponential", 1.0), ("gaussian", 1.0),
                ("yukawa", 1.0), ("steps", 3.0))


def _trained_preset(name: str, potentials: int, members: tuple, test_size: int) -> EnergyPreset:
    """The quick and full presets: the same recipe, told apart by their sizes."""
    config = preset_config(epochs=300, patience=60, lbfgs_steps=400)
    return EnergyPreset(
        name=name, test_size=test_size, kR_max=3.6, k_balance=(0.0, 0.5),
        description=f"N = 64, inputs (U, k^2) with k R uniform in [0, 3.6], 2 x 64 tanh, "
        f"{potentials // 1000}k potentials per iteration (iteration 1: depth 0.1-1, independent "
        "steps 3/8 of the rows; iteration 2: depth 1-2, independent steps only), "
        f"{members[0]} / {members[1]} members, rows weighted by depth^-3 (iteration 2 also by the "
        "k balance, gamma = 0.5); Adam 300 epochs, then 400 L-BFGS steps",
        iterations=(
            IterationSpec(potentials, (0.1, 1.0), config, members[0], weight_power=1.5, families=_STEPS_HEAVY),
            IterationSpec(potentials, (1.0, 2.0), config, members[1], weight_power=1.5, families=_ROUGH),
        ))


ENERGY_PRESETS = {
    "tiny": EnergyPreset(
        name="tiny", grid=8, test_size=40, test_kR=(0.0, 1.5, 3.0), kR_max=3.6,
        k_balance=(0.0, 0.5),
        description="plumbing check, seconds",
        iterations=(
            IterationSpec(600, (0.1, 1.0), preset_config(hidden=(16,), epochs=5, patience=0), 2,
                          weight_power=1.5, families=_STEPS_HEAVY),
            IterationSpec(600, (0.3, 2.0), preset_config(hidden=(16,), epochs=5, patience=0), 1,
                          weight_power=1.5, families=_ROUGH),
        )),
    # Measured: 316 s wall, 1.5 GB peak memory on this project's 2-core machine (321 s pinned to
    # one core, same numbers); every goal met: learned a_1(k) 0.03-0.32 %, a_2(k) 2.0-4.3 %,
    # e1(k) 0.16-1.8 % at k R = 0, 1, 2, 3, rho_1 2.3 % (docs/energy.md).
    "quick": _trained_preset("quick", potentials=30000, members=(3, 4), test_size=500),
    # Measured: 1627 s (27 min) wall pinned to one core (iterations 676 s and 948 s), 0.85 GB
    # peak memory; every goal met: learned a_1(k) 0.05-0.47 %, a_2(k) 2.1-5.9 %, e1(k)
    # 0.10-1.6 % at k R = 0, 1, 2, 3, rho_1 3.3 % (docs/energy.md).
    "full": _trained_preset("full", potentials=80000, members=(4, 6), test_size=2000),
}


def get_energy_preset(name: str) -> EnergyPreset:
    try:
        return ENERGY_PRESETS[name]
    except KeyError:
        raise FeynmlpError(f"unknown preset {name!r}; choose one of {sorted(ENERGY_PRESETS)}") from None


# ----------------------------------------------------------------------------- data

_K_BANDS = 12


def k_balance_factor(y, depth, k2, order, k_max, gamma, bands=_K_BANDS) -> np.ndarray:
    """Per-row loss factors (m(k) / m(0))^(-gamma) that even out the loss over k.

    The residual of iteration `order` scales as depth^order times a function of k that falls
    about thirty-fold between k R = 0 and 3 for order 2 (the second derivative of a(k) at
    U = 0 shrinks with k), so a loss weighted by depth alone hardly sees the large k. m(k) is
    the mean of (y / depth^order)^2 over the rows whose k lies in the same one of `bands`
    equal bands of [0, k_max], interpolated linearly in k between the bands' midpoints (and
    constant beyond the outer ones); gamma = 1 gives every band the same weighted mean
    square, gamma = 0 changes nothing. Only the targets' own sizes enter, no derivative.
    """
    y, depth = np.asarray(y, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    k = np.sqrt(np.asarray(k2, dtype=np.float64))
    edges = np.linspace(0.0, float(k_max), bands + 1)
    band = np.clip(np.searchsorted(edges, k, side="right") - 1, 0, bands - 1)
    z = (y / depth ** order) ** 2
    counts = np.bincount(band, minlength=bands)
    if np.any(counts == 0) or not np.all(np.isfinite(z)):
        raise FeynmlpError(f"k_balance needs training rows in each of the {bands} bands of k in "
                           f"[0, {k_max}] and finite targets; raise the iteration's size")
    m = np.bincount(band, weights=z, minlength=bands) / counts
    if not np.all(m > 0):
        raise FeynmlpError("k_balance: a band of k has only zero targets; set k_balance to 0")
    mids = 0.5 * (edges[1:] + edges[:-1])
    return (np.interp(k, mids, m) / m[0]) ** (-float(gamma))


def energy_training_data(size, grid, R, seed, depth_range, kR_max, families=None, a_max=3.0):
    """Training rows (U, k^2) with a(k) (see the module docstring).

    Returns:
        (X (n, grid + 1) = (U, k^2), depth (n,) = max|U_n| R^2, a_k (n,)).
    """
    from .exact_scattering import scattering_length

    U, depth, _ = training_potentials(size, grid, R, seed, depth_range, families, a_max)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 13]))
    k = rng.uniform(0.0, kR_max, U.shape[0]) / R
    with np.errstate(all="ignore"):
        a_k = scattering_length(U, R, k)
    keep = np.isfinite(a_k) & (np.abs(a_k) <= a_max * R)
    X = np.hstack([U, (k * k)[:, None]])
    return X[keep], depth[keep], a_k[keep]


def _mlps(networks):
    return [getattr(n, "mlp", n) for n in networks]


def _along_U(networks, X, order: int) -> np.ndarray:
    """Ensemble mean of the coefficients of t -> f(t U, k^2), each row at its own k^2: (n, order+1)."""
    from feynmlp import directional

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    points = np.zeros_like(X)
    points[:, -1] = X[:, -1]
    directions = X.copy()
    directions[:, -1] = 0.0
    return np.mean([directional(m, points, directions, order)[:, 0, :] for m in _mlps(networks)],
                   axis=0)


def energy_targets(a_k, X, previous) -> np.ndarray:
    """a(k) - sum_{j<k} T_j[f_j](U; k^2): T_j the degree-j Taylor polynomial in U at (0, k^2)."""
    y = np.array(a_k, dtype=np.float64, copy=True)
    for j, networks in enumerate(previous, start=1):
        y -= _along_U(networks, X, j).sum(axis=1)
    return y


def _taylor_in_U(networks, N, k2, order):
    """Ensemble mean gradient (N,) and Hessian (N, N) (order 2) in U at (0, k^2)."""
    from feynmlp import taylor

    x0 = np.zeros(N + 1)
    x0[-1] = k2
    grads, hessians = [], []
    for m in _mlps(networks):
        T = taylor(m, x0, order, wrt=list(range(N)))
        grads.append(T.gradient[0])
        if order >= 2:
            hessians.append(T.hessian[0])
    return np.mean(grads, axis=0), (np.mean(hessians, axis=0) if hessians else None)


def _mixed_kernel(networks, N):
    """Ensemble mean of d^2 f / d(k^2) dU_n at (0, 0): the learned kernel of rho_1."""
    from feynmlp import taylor

    return np.mean([taylor(m, np.zeros(N + 1), 2).hessian[0][N, :N] for m in _mlps(networks)],
                   axis=0)


def _median_rel(x, ref) -> float:
    x, ref = np.asarray(x), np.asarray(ref)
    return float(np.median(np.abs(x - ref) / np.abs(ref)))


# ----------------------------------------------------------------------------- the run

def _run(preset: EnergyPreset, out, progress, say):
    from .born_series import born_kernels, born_terms
    from .exact_scattering import scattering_length
    from .finite_energy import shape_terms
    from .potentials import sample_potentials_with_a

    N, R = preset.grid, preset.R
    t0 = time.perf_counter()
    test_U, _, _ = sample_potentials_with_a(preset.test_size, N, R, seed=preset.seed + 1_000_003,
                                            depth_range=preset.test_depth_range)
    iterations = []
    for it_k, spec in enumerate(preset.iterations, start=1):
        t1 = time.perf_counter()
        families = family_weights(spec.families)
        seed = preset.seed * 100 + it_k
        X, depth, a_k = energy_training_data(spec.size, N, R, seed, spec.depth_range,
                                             preset.kR_max, families, preset.a_max)
        y = energy_targets(a_k, X, [it["networks"] for it in iterations])
        power = it_k if spec.weight_power is None else spec.weight_power
        weights = depth ** (-2.0 * power) if power else None
        balance = preset.k_balance[it_k - 1] if it_k <= len(preset.k_balance) else 0.0
        loss_weight = f"depth^(-{2 * power})" if power else "none"
        if balance:
            factor = k_balance_factor(y, depth, X[:, -1], it_k, preset.kR_max / R, balance)
            weights = factor if weights is None else weights * factor
            loss_weight += (f" x (m(k)/m(0))^(-{balance}), m(k) the mean of (target/depth^{it_k})^2"
                            f" over the rows of k's band ({_K_BANDS} bands of [0, kR_max])")
        record = {
            "iteration": it_k, "preset": preset.name, "observable": "energy",
            "inputs": f"(U_1 .. U_{N}, k^2): U in 1/length^2, k^2 in 1/length^2 (hbar = 2 mu = 1)",
            "output": "a(k) = -tan(delta(k))/k" if it_k == 1 else
                      f"a(k) - sum_(j<{it_k}) T_j[f_j](U; k^2) (Taylor polynomials in U at (0, k^2))",
            "dataset": {"size": int(len(y)), "drawn": spec.size, "grid": N, "R": R, "seed": seed,
                        "depth_range": list(spec.depth_range), "kR_range": [0.0, preset.kR_max],
                        "families": families or "all", "a_max_R": preset.a_max},
            "loss_weight": loss_weight,
        }
        nets = train_ensemble(X, y, spec.config, spec.members, seed=seed, progress=progress,
                              description=f"iteration {it_k}", record=record,
                              sample_weights=weights)
        paths = []
        folder = os.path.join(out, "models", f"iteration-{it_k}")
        os.makedirs(folder, exist_ok=True)
        for m, net in enumerate(nets):
            path = os.path.join(folder, f"member-{m}.safetensors")
            net.mlp.save(path, record=net.mlp.record)
            paths.append(os.path.relpath(path, out))
        seconds = time.perf_counter() - t1
        iterations.append({"k": it_k, "networks": nets, "train_size": int(len(y)),
                           "target_std": float(np.std(y)), "seconds": seconds, "models": paths})
        say(f"iteration {it_k}: {spec.members} network(s) on {len(y)} rows ({seconds:.1f} s)")

    k_values = [kR / R for kR in preset.test_kR]
    per_k = []
    for k in k_values:
        K = born_kernels(N, R, 2, k=k)
        exact = born_terms(test_U, 2, R, k=k)
        X = np.hstack([test_U, np.full((len(test_U), 1), k * k)])
        learned = {}
        for it in iterations[:2]:
            series = _along_U(it["networks"], X, it["k"])
            learned[it["k"]] = series[:, it["k"]]
        g1, _ = _taylor_in_U(iterations[0]["networks"], N, k * k, 1)
        h2 = None
        if len(iterations) >= 2:
            _, h2 = _taylor_in_U(iterations[1]["networks"], N, k * k, 2)
        a_net = np.mean([m(X)[:, 0] for m in _mlps(iterations[0]["networks"])], axis=0)
        a_exact = scattering_length(test_U, R, k)
        per_k.append({"k": k, "kernels": K, "exact": exact, "learned": learned, "g1": g1, "h2": h2,
                      "f1_rel": _median_rel(a_net, a_exact)})
    rho_kernel = _mixed_kernel(iterations[0]["networks"], N)
    r = np.linspace(0.0, R, N + 1)
    rho_kernel_exact = -(r[1:] ** 5 - r[:-1] ** 5) / 15.0
    rho1_exact = shape_terms(test_U, 1, R)[:, 0]
    return {"test_U": test_U, "iterations": iterations, "per_k": per_k, "k_values": k_values,
            "rho_kernel": rho_kernel, "rho_kernel_exact": rho_kernel_exact,
            "rho1_learned": test_U @ rho_kernel, "rho1_exact": rho1_exact,
            "seconds": time.perf_counter() - t0}


def _metrics(preset, run) -> dict:
    m = {"observable": "energy", "preset": preset.name, "grid": preset.grid, "R": preset.R,
         "k_values": run["k_values"], "test_size": int(len(run["test_U"])),
         "test_depth_range": list(preset.test_depth_range), "kR_train_range": [0.0, preset.kR_max]}
    born, e1, e2, f1 = {}, {}, {}, {}
    for entry in run["per_k"]:
        key = str(float(entry["k"]))
        born[key] = {str(j): _median_rel(v, entry["exact"][:, j - 1])
                     for j, v in entry["learned"].items()}
        first = entry["kernels"].first
        e1[key] = float(np.linalg.norm(entry["g1"] - first) / np.linalg.norm(first))
        f1[key] = entry["f1_rel"]
        if entry["h2"] is not None:
            second = entry["kernels"].second
            e2[key] = float(np.linalg.norm(entry["h2"] - second) / np.linalg.norm(second))
    m["born_median_rel_err_k"] = born
    m["e1_k"] = e1
    m["f1_vs_exact_median_rel_k"] = f1
    if e2:
        m["e2_f2_k"] = e2
    m["rho1_median_rel_err"] = _median_rel(run["rho1_learned"], run["rho1_exact"])
    exact = run["rho_kernel_exact"]
    m["rho1_kernel_rel_err"] = float(np.linalg.norm(run["rho_kernel"] - exact) / np.linalg.norm(exact))
    m["iterations"] = [
        {"k": it["k"], "members": len(it["networks"]), "train_size": it["train_size"],
         "target_std": it["target_std"], "seconds": it["seconds"], "models": it["models"],
         "members_metrics": [n.metrics for n in it["networks"]]}
        for it in run["iterations"]]
    m["goals"] = _goals(m)
    return m


def _goals(m) -> list:
    out = []
    for key, bound, text in ENERGY_GOALS:
        value = m
        for part in key.split(".")[:1]:
            value = value.get(part)
        if isinstance(value, dict):  # per k: the worst k decides
            sub = key.split(".")[1] if "." in key else None
            values = [v.get(sub) if sub else v for v in value.values()]
            values = [v for v in values if v is not None]
            value = max(values) if values else None
        out.append({"metric": key, "goal": text, "bound": bound, "value": value,
                    "met": None if value is None else bool(value <= bound),
                    "factor_over": None if value is None else float(value / bound)})
    return out


# ----------------------------------------------------------------------------- figures, report

def _figures(preset, run, out) -> dict:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .finite_energy import phase_shift
    from .report import _save_figure

    N, R = preset.grid, preset.R
    r_mid = (np.arange(N) + 0.5) * R / N
    files = {}
    per_k = run["per_k"]
    rows = 2 if per_k[0]["h2"] is not None else 1
    fig, axes = plt.subplots(rows, len(per_k), figsize=(3.6 * len(per_k), 3.3 * rows), squeeze=False)
    for col, entry in enumerate(per_k):
        ax = axes[0, col]
        ax.plot(r_mid, entry["kernels"].first, "k-", lw=2, label="exact")
        ax.plot(r_mid, entry["g1"], "o", ms=3, label="grad_U f1(0, k^2)")
        ax.set_title(f"a_1(k) kernel, k R = {entry['k'] * R:.3g}")
        ax.set_xlabel("r / R")
        if col == 0:
            ax.legend(fontsize=8)
        if rows == 2:
            ax = axes[1, col]
            second = entry["kernels"].second
            mid = N // 2
            ax.plot(r_mid, np.diag(second), "k-", lw=2, label="exact diagonal")
            ax.plot(r_mid, np.diag(entry["h2"]), "o", ms=3, label="f2 diagonal")
            ax.plot(r_mid, second[mid], "k--", lw=1.2, label=f"exact row {mid}")
            ax.plot(r_mid, entry["h2"][mid], "s", ms=2.5, label=f"f2 row {mid}")
            ax.set_title(f"a_2(k) kernel (d^2 a/dU dU), k R = {entry['k'] * R:.3g}")
            ax.set_xlabel("r / R")
            if col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    files["kernels"] = "energy_kernels.png"
    _save_figure(plt, fig, os.path.join(out, files["kernels"]))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(r_mid, run["rho_kernel_exact"], "k-", lw=2, label="exact: -(r_n^5 - r_(n-1)^5)/15")
    axes[0].plot(r_mid, run["rho_kernel"], "o", ms=3, label="d^2 f1 / d(k^2) dU_n at (0, 0)")
    axes[0].set_xlabel("r / R"); axes[0].set_title("rho_1 kernel"); axes[0].legend(fontsize=8)
    ex, le = run["rho1_exact"], run["rho1_learned"]
    lim = [float(min(ex.min(), le.min())), float(max(ex.max(), le.max()))]
    axes[1].plot(ex, le, ".", ms=3)
    axes[1].plot(lim, lim, "k-", lw=0.8)
    axes[1].set_xlabel("exact rho_1"); axes[1].set_ylabel("learned rho_1")
    axes[1].set_title(f"test potentials: median rel. err. {_median_rel(le, ex):.3g}")
    fig.tight_layout()
    files["rho1"] = "energy_rho1.png"
    _save_figure(plt, fig, os.path.join(out, files["rho1"]))

    U = run["test_U"][:4]
    k = np.linspace(0.0, preset.kR_max / R, 61)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    nets = _mlps(run["iterations"][0]["networks"])
    for i, u in enumerate(U):
        exact = phase_shift(u, k, R)
        X = np.hstack([np.repeat(u[None], k.size, axis=0), (k * k)[:, None]])
        a_net = np.mean([m(X)[:, 0] for m in nets], axis=0)
        line, = ax.plot(k * R, exact, "-", lw=1.8, label=f"potential {i}: exact")
        ax.plot(k * R, np.arctan(-k * a_net), "o", ms=2.5, color=line.get_color(),
                label=f"potential {i}: atan(-k f1)")
    ax.set_xlabel("k R"); ax.set_ylabel("delta(k)"); ax.legend(fontsize=7)
    ax.set_title("phase shifts of test potentials")
    fig.tight_layout()
    files["phase_shifts"] = "energy_phase_shifts.png"
    _save_figure(plt, fig, os.path.join(out, files["phase_shifts"]))
    return files


def _report(preset, m, out, files) -> str:
    from .report import _pct, goal_lines

    R = preset.R
    lines = [f"# Network perturbation theory of a(k): preset `{preset.name}`", "",
             f"{preset.description}.", "",
             f"Grid N = {preset.grid}, R = {R}. Inputs (U_1 .. U_N, k^2), output a(k) = "
             f"-tan(delta)/k; training k R uniform in [0, {preset.kR_max}]. Test set: "
             f"{m['test_size']} shallow attractive potentials of the default ensemble, depth "
             f"max|U| R^2 log-uniform in {list(preset.test_depth_range)}. Wall time "
             f"{m.get('wall_seconds', float('nan')):.0f} s.", "",
             "## Figures of merit", "",
             "| k R | learned a_1(k) | learned a_2(k) | e1(k) | e2(f2)(k) | f1 vs exact a(k) |",
             "|---|---|---|---|---|---|"]
    for key, row in m["born_median_rel_err_k"].items():
        lines.append(f"| {float(key) * R:.3g} | {_pct(row.get('1'))} | {_pct(row.get('2'))} | "
                     f"{_pct(m['e1_k'].get(key))} | {_pct(m.get('e2_f2_k', {}).get(key))} | "
                     f"{_pct(m['f1_vs_exact_median_rel_k'].get(key))} |")
    lines += ["", "Learned a_j(k): median over the test potentials of |t^j coefficient of "
              "f_j(t U, k^2) - a_j(k)| / |a_j(k)|; e2(f2)(k) = |d^2_U f2(0, k^2) - d^2 a(k)/dU^2|_F "
              "/ |d^2 a(k)/dU^2|_F; f1 vs exact a(k): the network's own value, median relative "
              "error (the loss weights rows by depth^(-2 weight_power), which favours the small "
              "potentials where the Taylor coefficients at U = 0 are fixed, over the value of "
              "f1 on deeper ones).", "",
              f"- learned rho_1 (d^2 f1/d(k^2) dU at (0, 0), applied to the test potentials), "
              f"median relative error: {_pct(m['rho1_median_rel_err'])}",
              f"- its kernel against -(r_n^5 - r_(n-1)^5)/15: relative error "
              f"{_pct(m['rho1_kernel_rel_err'])}", "", "## Goals", ""]
    lines += goal_lines(m["goals"])
    lines += ["", "## Iterations", "", "| k | members | training rows | target std | seconds |",
              "|---|---|---|---|---|"]
    for it in m["iterations"]:
        lines.append(f"| {it['k']} | {it['members']} | {it['train_size']} | {it['target_std']:.3g} "
                     f"| {it['seconds']:.0f} |")
    if files:
        lines += ["", "## Figures", ""] + [f"![{name}]({f})" for name, f in files.items()]
    lines += ["", "Models: `models/iteration-K/member-M.safetensors` (load with `feynmlp.load`); "
              "their last input is k^2, in the toolkit's units, and the scalings are folded in.", ""]
    path = os.path.join(out, "report.md")
    atomic_write(path, "\n".join(lines))
    return path


def reproduce_energy(preset, out, progress: bool = False, log=None, figures: bool = True) -> dict:
    """Run the finite-energy experiment (an `EnergyPreset` or its name) and write metrics.json,
    report.md, figures and models into `out` (created if missing). Returns the metrics."""
    if isinstance(preset, str):
        preset = get_energy_preset(preset)
    out = os.fspath(out)
    check_output_folder(out)  # before the training, which takes minutes
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise FeynmlpError(f"cannot create the output folder {out!r}: {exc.strerror or exc}; "
                           "choose another output folder") from None
    say = log or (lambda line: None)
    start = time.perf_counter()
    run = _run(preset, out, progress, say)
    metrics = _metrics(preset, run)
    metrics["preset_definition"] = preset.as_dict()
    files = _figures(preset, run, out) if figures else {}
    metrics["figures"] = files
    metrics["wall_seconds"] = time.perf_counter() - start
    atomic_write(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2, sort_keys=True))
    _report(preset, metrics, out, files)
    return metrics
