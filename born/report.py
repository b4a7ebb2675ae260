"""Figures of merit, figures and report.md of an iterative perturbation-theory run.

In: a `PerturbationRun` (feynmlp.born.perturbation) and an output folder. Out:
- `compute_metrics(run)`: the figures of merit as a JSON-ready dict (metrics.json);
- `write_figures(run, out)`: PNG files (matplotlib, Agg backend); born_terms.png holds, per
  Born order, histograms of the relative errors `born_relative_errors(run)` on log axes;
- `write_report(run, metrics, out, figures)`: report.md, which states every goal of the full
  preset as met or missed, and by how much;
- `reproduce(preset, out)`: all of it, as `feynmlp born reproduce` runs it; the folder is
  checked before the training, and every file goes through feynmlp.files.atomic_writer.

Definitions (all coefficients are ensemble means over an iteration's members):
    e1     = |d f1(0) - c| / |c|                     (Euclidean norms)
    e2(f)  = |d^2 f(0) + 2K|_F / |2K|_F   (and e2_fk_top8: the same error projected on the 8
             eigenvectors of K with the largest eigenvalues, the smooth directions)
    learned Born term k of potential U: the t^k coefficient of f_k(t U) at t = 0, against the
    exact a_k(U); relative error |learned - a_k| / |a_k|, median over the test potentials;
    a_ML2(U) = d f1(0) . U + (1/2) U . d^2 f2(0) . U against a_1 + a_2 and against a.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from feynmlp.errors import FeynmlpError
from feynmlp.files import atomic_write, atomic_writer, check_output_folder

_TOP_DIRECTIONS = 8

__all__ = ["GOALS", "compute_metrics", "write_figures", "write_report", "reproduce"]

# Goals of the full preset: (metric key, bound, description).
GOALS = (
    ("e1", 0.02, "e1 = |d f1(0) - c| / |c| <= 2 %"),
    ("e2_f2", 0.10, "e2(f2) = |d^2 f2(0) + 2K|_F / |2K|_F <= 10 %"),
    ("born_median_rel_err.2", 0.05, "median relative error of the learned a_2 <= 5 %"),
    ("ml2_vs_born12_median_rel", 0.01, "a_ML2 within 1 % of a_1 + a_2 (median)"),
)


def _median_rel(x, ref) -> float:
    x, ref = np.asarray(x), np.asarray(ref)
    return float(np.median(np.abs(x - ref) / np.abs(ref)))


def _e2(hessian, second) -> float:
    return float(np.linalg.norm(hessian - second) / np.linalg.norm(second))


def compute_metrics(run) -> dict:
    """The figures of merit of `run` (see the module docstring) as a JSON-ready dict."""
    c, second = run.kernels.first, run.kernels.second
    its = run.iterations
    m: dict = {"grid": run.preset.grid, "R": run.preset.R, "preset": run.preset.name,
               "test_size": int(len(run.test_a)),
               "test_depth_range": list(run.preset.test_depth_range),
               "subtract": run.preset.subtract}
    m["e1"] = float(np.linalg.norm(its[0].gradient - c) / np.linalg.norm(c))
    # The error of a Hessian split by the eigen-directions of K: the smooth top ones carry
    # almost all of |2K|_F, the rough rest are where little data constrains a network.
    _, vectors = np.linalg.eigh(-second)
    top = vectors[:, -_TOP_DIRECTIONS:]
    for it in its:
        m[f"e2_f{it.k}"] = _e2(it.hessian, second)
        block = top.T @ (it.hessian - second) @ top
        m[f"e2_f{it.k}_top{_TOP_DIRECTIONS}"] = float(np.linalg.norm(block) / np.linalg.norm(second))
        m[f"e1_f{it.k}"] = float(np.linalg.norm(it.gradient - c) / np.linalg.norm(c))
    born = run.test_born
    m["born_median_rel_err"] = {
        str(it.k): _median_rel(it.test_series[:, it.k], born[:, it.k - 1])
        for it in its if it.k <= born.shape[1]}
    # Every network against every Born term: shows which order each iteration has learned.
    m["born_median_rel_err_by_network"] = {
        f"f{it.k}": {str(k): _median_rel(it.test_series[:, k], born[:, k - 1])
                     for k in range(1, min(it.test_series.shape[1] - 1, born.shape[1]) + 1)}
        for it in its}
    a = run.test_a
    a1, a12 = born[:, 0], born[:, 0] + born[:, 1]
    m["born1_vs_exact_median_rel"] = _median_rel(a1, a)
    m["born12_vs_exact_median_rel"] = _median_rel(a12, a)
    if born.shape[1] >= 3:
        m["born123_vs_exact_median_rel"] = _median_rel(a12 + born[:, 2], a)
    m["f1_vs_exact_median_rel"] = _median_rel(_network_values(its[0], run.test_U), a)
    if len(its) >= 2:
        ml2 = run.a_ml2()
        m["ml2_vs_born12_median_rel"] = _median_rel(ml2, a12)
        m["ml2_vs_exact_median_rel"] = _median_rel(ml2, a)
        ml1 = run.test_U @ its[0].gradient
        m["ml1_vs_born1_median_rel"] = _median_rel(ml1, a1)
    m["iterations"] = [
        {"k": it.k, "members": len(it.networks), "train_size": it.train_size,
         "target_std": it.target_scale, "seconds": it.seconds, "value_at_0": it.value0,
         "members_metrics": [n.metrics for n in it.networks],
         "models": [os.path.relpath(p, os.path.dirname(os.path.dirname(os.path.dirname(p))))
                    for p in it.model_paths]}
        for it in its]
    m["goals"] = _goal_status(m)
    return m


def _network_values(it, U) -> np.ndarray:
    return np.mean([n.mlp(U)[:, 0] for n in it.networks], axis=0)


def _lookup(m: dict, key: str):
    value = m
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _goal_status(m: dict) -> list:
    out = []
    for key, bound, text in GOALS:
        value = _lookup(m, key)
        out.append({"metric": key, "goal": text, "bound": bound, "value": value,
                    "met": None if value is None else bool(value <= bound),
                    "factor_over": None if value is None else float(value / bound)})
    return out


# ----------------------------------------------------------------------------- figures

def write_figures(run, out) -> dict:
    """Write the PNG figures into `out`; returns {name: file name}."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = os.fspath(out)
    files = {}
    N, R = run.preset.grid, run.preset.R
    r_mid = (np.arange(N) + 0.5) * R / N
    its = run.iterations
    c, second = run.kernels.first, run.kernels.second

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(r_mid, c, "k-", lw=2, label="c (exact kernel)")
    for it in its[:2]:
        axes[0].plot(r_mid, it.gradient, "o", ms=3, label=f"d f{it.k}(0)")
        axes[1].plot(r_mid, it.gradient - c, "o-", ms=3, label=f"d f{it.k}(0) - c")
    axes[0].set_xlabel("r / R"); axes[0].set_ylabel("d a / d U_n"); axes[0].legend()
    axes[0].set_title("first-order coefficients at U = 0")
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_xlabel("r / R"); axes[1].set_title("difference"); axes[1].legend()
    fig.tight_layout()
    files["first_order"] = "first_order.png"
    _save_figure(plt, fig, os.path.join(out, files["first_order"]))

    rows = its[:2]
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 4 * len(rows)), squeeze=False)
    vmax = float(np.max(np.abs(second)))
    for row, it in zip(axes, rows):
        panels = ((it.hessian, f"d^2 f{it.k}(0)"), (second, "-2K (exact)"),
                  (it.hessian - second, f"d^2 f{it.k}(0) + 2K"))
        for ax, (matrix, title) in zip(row, panels):
            im = ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower",
                           extent=(0, R, 0, R))
            ax.set_title(f"{title}  (e2 = {_e2(it.hessian, second):.3g})" if "+" in title else title)
            ax.set_xlabel("r' / R"); ax.set_ylabel("r / R")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    files["second_order"] = "second_order_heatmaps.png"
    _save_figure(plt, fig, os.path.join(out, files["second_order"]))

    born = run.test_born
    files["born_terms"] = "born_terms.png"
    _born_error_histograms(plt, run, os.path.join(out, files["born_terms"]))

    if len(its) >= 2:
        a, a12 = run.test_a, born[:, 0] + born[:, 1]
        ml2 = run.a_ml2()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        lim = [float(min(a12.min(), ml2.min())), float(max(a12.max(), ml2.max()))]
        axes[0].plot(a12, ml2, ".", ms=3)
        axes[0].plot(lim, lim, "k-", lw=0.8)
        axes[0].set_xlabel("a_1 + a_2 (exact)"); axes[0].set_ylabel("a_ML2")
        axes[0].set_title(f"median rel. dev. {_median_rel(ml2, a12):.3g}")
        lim = [float(a.min()), float(a.max())]
        axes[1].plot(a, ml2, ".", ms=3, label="a_ML2")
        axes[1].plot(a, a12, ".", ms=3, label="a_1 + a_2")
        axes[1].plot(a, born[:, 0], ".", ms=3, label="a_1")
        axes[1].plot(lim, lim, "k-", lw=0.8)
        axes[1].set_xlabel("exact a"); axes[1].legend()
        axes[1].set_title("against the exact scattering length")
        fig.tight_layout()
        files["ml2"] = "ml2_vs_born.png"
        _save_figure(plt, fig, os.path.join(out, files["ml2"]))
    return files


def _save_figure(plt, fig, path) -> None:
    """Write `fig` as a PNG through feynmlp.files.atomic_writer, then close it."""
    try:
        with atomic_writer(path) as handle:
            fig.savefig(handle, format="png", dpi=110)
    except OSError as exc:
        raise FeynmlpError(f"cannot write {path!r}: {exc.strerror or exc}; check the folder and "
                           "the free space") from None
    finally:
        plt.close(fig)


def born_relative_errors(run) -> dict:
    """{(j, k): |t^k coefficient of f_j(t U) - a_k(U)| / |a_k(U)| over the test potentials}."""
    born = run.test_born
    out = {}
    for it in run.iterations:
        for k in range(1, min(it.test_series.shape[1] - 1, born.shape[1]) + 1):
            exact = born[:, k - 1]
            out[(it.k, k)] = np.abs(it.test_series[:, k] - exact) / np.abs(exact)
    return out


def _born_error_histograms(plt, run, path) -> None:
    """One panel per Born order k: histograms of the relative error of the t^k coefficient of
    every network f_j with j <= k (f_j's target still contains a_k) on log-spaced bins, log
    axes, so that neither the outliers nor the bulk hide the other; each median is marked, the
    network f_k that should learn a_k is drawn bold. Errors outside [1e-6, 1e6] are clipped
    into the end bins."""
    errors = {jk: e for jk, e in born_relative_errors(run).items() if jk[0] <= jk[1]}
    orders = sorted({k for _, k in errors})
    finite = np.concatenate([e[np.isfinite(e) & (e > 0)] for e in errors.values()])
    lo = 10.0 ** np.floor(np.log10(max(float(finite.min()), 1e-6))) if finite.size else 1e-6
    hi = 10.0 ** np.ceil(np.log10(min(float(finite.max()), 1e6))) if finite.size else 1e2
    bins = np.logspace(np.log10(lo), np.log10(max(hi, 10 * lo)), 61)
    fig, axes = plt.subplots(1, len(orders), figsize=(4.6 * len(orders), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, k in zip(axes[0], orders):
        for j in sorted(jj for jj, kk in errors if kk == k):
            e = np.clip(errors[(j, k)], bins[0], bins[-1])
            med = float(np.median(errors[(j, k)]))
            color = colors[(j - 1) % len(colors)]
            main = j == k
            ax.hist(e, bins=bins, histtype="step", color=color, lw=2.2 if main else 1.0,
                    alpha=1.0 if main else 0.75,
                    label=f"f{j}: median {100 * med:.3g} %")
            ax.axvline(med, color=color, ls="--", lw=1.2 if main else 0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"|t^{k} coefficient of f_j(t U) - a_{k}| / |a_{k}|")
        ax.set_ylabel("test potentials")
        ax.set_title(f"Born term a_{k} ({len(run.test_a)} test potentials)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(plt, fig, path)


# ----------------------------------------------------------------------------- report.md

def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.3g} %"


def goal_lines(goals) -> list[str]:
    """One Markdown list item per goal: not measured, met, or missed by what factor."""
    lines = []
    for g in goals:
        if g["value"] is None:
            lines.append(f"- {g['goal']}: not measured")
        elif g["met"]:
            lines.append(f"- {g['goal']}: **met** ({_pct(g['value'])})")
        else:
            lines.append(f"- {g['goal']}: **missed** ({_pct(g['value'])}, "
                         f"{g['factor_over']:.3g} times the bound)")
    return lines


def write_report(run, metrics: dict, out, figures: dict | None = None) -> str:
    """Write report.md into `out` and return its path."""
    p = run.preset
    m = metrics
    lines = [f"# Iterative NN perturbation theory for the Born series: preset `{p.name}`", ""]
    lines += [f"{p.description}.", "",
              f"Grid N = {p.grid}, R = {p.R}; test set: {m['test_size']} shallow attractive "
              f"potentials of the default ensemble (all families), depth max|U| R^2 "
              f"log-uniform in {list(p.test_depth_range)}. Subtraction: {p.subtract} "
              f"({'the networks own Taylor polynomials' if p.subtract == 'network' else 'the exact Born terms'}). "
              f"Wall time {m.get('wall_seconds', float('nan')):.0f} s.", ""]
    lines += ["## Figures of merit", "", "| quantity | value |", "|---|---|",
              f"| e1 = \\|d f1(0) - c\\| / \\|c\\| | {_pct(m['e1'])} |"]
    for it in run.iterations:
        lines.append(f"| e2(f{it.k}) = \\|d^2 f{it.k}(0) + 2K\\|_F / \\|2K\\|_F | {_pct(m[f'e2_f{it.k}'])} |")
    for it in run.iterations:
        key = f"e2_f{it.k}_top{_TOP_DIRECTIONS}"
        lines.append(f"| e2(f{it.k}) restricted to the top {_TOP_DIRECTIONS} eigen-directions of K | {_pct(m[key])} |")
    for k, v in m["born_median_rel_err"].items():
        lines.append(f"| learned a_{k} (t^{k} of f{k}) vs exact a_{k}, median rel. error | {_pct(v)} |")
    if "ml2_vs_born12_median_rel" in m:
        lines += [f"| a_ML2 vs a_1 + a_2, median rel. deviation | {_pct(m['ml2_vs_born12_median_rel'])} |",
                  f"| a_ML2 vs exact a | {_pct(m['ml2_vs_exact_median_rel'])} |"]
    lines += [f"| a_1 vs exact a | {_pct(m['born1_vs_exact_median_rel'])} |",
              f"| a_1 + a_2 vs exact a | {_pct(m['born12_vs_exact_median_rel'])} |",
              f"| f1 itself vs exact a | {_pct(m['f1_vs_exact_median_rel'])} |", ""]
    lines += ["Every network against every exact Born term (median relative error of the t^k "
              "coefficient along the test potentials):", "",
              "| network | " + " | ".join(f"a_{k}" for k in range(1, 4)) + " |",
              "|---|" + "---|" * 3]
    for name, row in m["born_median_rel_err_by_network"].items():
        lines.append(f"| {name} | " + " | ".join(_pct(row.get(str(k))) for k in range(1, 4)) + " |")
    lines += ["", "## Goals of the full preset", ""]
    lines += goal_lines(m["goals"])
    e21, e22 = m.get("e2_f1"), m.get("e2_f2")
    if e21 is not None and e22 is not None:
        verdict = ("much worse than" if e21 > 3 * e22 else "worse than" if e21 > e22
                   else "not worse than")
        lines += ["", f"Finding: e2(f1) = {_pct(e21)} is {verdict} e2(f2) = {_pct(e22)} "
                  "(the paper reports that f1 does not learn the second order and f2 does)."]
    lines += ["", "## Iterations", "", "| k | members | training potentials | target std | seconds |",
              "|---|---|---|---|---|"]
    for it in m["iterations"]:
        lines.append(f"| {it['k']} | {it['members']} | {it['train_size']} | {it['target_std']:.3g} | "
                     f"{it['seconds']:.0f} |")
    if figures:
        lines += ["", "## Figures", ""]
        for name, f in figures.items():
            lines.append(f"![{name}]({f})")
    lines += ["", "Models: `models/iteration-K/member-M.safetensors` (load with `feynmlp.load`; "
              "input U, output in units of R, all scalings folded in). Hyper-parameters and "
              "per-network training metrics are in metrics.json and in each model's record.", ""]
    path = os.path.join(os.fspath(out), "report.md")
    atomic_write(path, "\n".join(lines))
    return path


def reproduce(preset, out, progress: bool = False, log=None, figures: bool = True) -> dict:
    """Run every iteration of `preset` (a Preset or a name) and write metrics.json, report.md,
    figures and the models into the folder `out` (created if missing). Returns the metrics."""
    from .perturbation import get_preset, run_iterations

    if isinstance(preset, str):
        preset = get_preset(preset)
    out = os.fspath(out)
    check_output_folder(out)  # before the training, which takes minutes
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:  # the folder changed since it was checked
        raise FeynmlpError(f"cannot create the output folder {out!r}: {exc.strerror or exc}; "
                           "choose another output folder") from None
    start = time.perf_counter()
    run = run_iterations(preset, out_dir=out, progress=progress, log=log)
    metrics = compute_metrics(run)
    metrics["preset_definition"] = preset.as_dict()
    files = write_figures(run, out) if figures else {}
    metrics["figures"] = files
    metrics["wall_seconds"] = time.perf_counter() - start
    atomic_write(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2, sort_keys=True))
    write_report(run, metrics, out, files)
    return metrics
