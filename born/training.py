"""Training MLPs on potentials with PyTorch (CPU), with the data scaling folded into the network.

In: inputs X of shape (n, N) (step potentials U in physical units, hbar = 2 mu = 1), targets
y of shape (n,) (a scattering length or a residual of the Born series, in the length unit of
R), a `TrainConfig` (architecture, optimiser, schedule, early stopping, dtype, threads) and a
seed. Out: a `TrainedNetwork` whose `.mlp` is a `feynmlp.MLP` in physical units: the input
and target scalings used for training are folded into its first and last affine maps, so
that every Taylor coefficient of `.mlp` at U = 0 is a derivative of a in physical units.

Scaling (why it folds exactly): the network is trained on x = U / s (s > 0 per input; no
shift, so U = 0 stays at the centre of the data and of the expansion) and on targets
t = (y - m) / q. The trained map g(x) gives y(U) = q g(U / s) + m, i.e.
    W(1) <- W(1) diag(1 / s),   W(L) <- q W(L),   b(L) <- q b(L) + m,
with every other weight unchanged.

Training: MSE on the scaled targets (optionally weighted per row), Adam, a cosine learning-rate schedule from `lr` down to
`lr_final`, early stopping on a validation split (the weights of the best validation epoch
are kept), an optional full-batch L-BFGS polish afterwards (also judged on the validation
split), a tqdm progress bar showing the losses. torch is imported inside the functions, so
`import feynmlp.born` works without it; install it with `pip install feynmlp[train]`.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from feynmlp.activation_names import SMOOTH_TORCH_ACTIVATIONS, TORCH_MODULES
from feynmlp.errors import FeynmlpError

__all__ = ["TrainConfig", "Scaling", "TrainedNetwork", "fit_scaling", "fold_scaling",
           "train_network", "train_ensemble", "require_torch"]

# The smooth activations a torch network can be built from, with their torch.nn class names.
_TORCH_ACTIVATIONS = {name: TORCH_MODULES[name] for name in SMOOTH_TORCH_ACTIVATIONS}


def require_torch():
    """Import and return torch, or raise a FeynmlpError that says how to install it."""
    try:
        import torch
    except ImportError:
        raise FeynmlpError(
            "training needs PyTorch, which is not installed; install the optional extra with "
            "`pip install feynmlp[train]` (the CPU build is enough)") from None
    return torch


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all stored in each saved network's record).

    Attributes:
        hidden: widths of the hidden layers.
        activation: a smooth activation: tanh, sigmoid, silu, gelu or softplus.
        epochs: the most epochs of Adam.
        batch_size: minibatch size.
        lr, lr_final: the cosine schedule runs from lr down to lr_final over `epochs`.
        weight_decay: Adam's L2 penalty (0: none).
        patience: stop after this many epochs without a better validation loss (0: never).
        validation_fraction: share of the rows held out for early stopping.
        lbfgs_steps: full-batch L-BFGS iterations after Adam (0: none).
        dtype: "float64" (default: second and third derivatives are small) or "float32".
        threads: torch CPU threads during training.
    """

    hidden: tuple = (128, 128)
    activation: str = "tanh"
    epochs: int = 200
    batch_size: int = 256
    lr: float = 3e-3
    lr_final: float = 3e-5
    weight_decay: float = 0.0
    patience: int = 40
    validation_fraction: float = 0.1
    lbfgs_steps: int = 0
    dtype: str = "float64"
    threads: int = 2

    def __post_init__(self):
        if self.activation not in _TORCH_ACTIVATIONS:
            raise FeynmlpError(
                f"activation {self.activation!r} is not one of the smooth activations "
                f"{sorted(_TORCH_ACTIVATIONS)}; ReLU-like ones have no second derivatives")
        if self.dtype not in ("float64", "float32"):
            raise FeynmlpError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise FeynmlpError(f"hidden must list at least one positive width, got {self.hidden!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise FeynmlpError(
                f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
        for name in ("epochs", "batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise FeynmlpError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass(frozen=True)
class Scaling:
    """x = U / input_scale and t = (y - output_shift) / output_scale (see the module docstring)."""

    input_scale: np.ndarray
    output_shift: float
    output_scale: float

    def as_dict(self) -> dict:
        return {"input_scale": [float(s) for s in self.input_scale],
                "output_shift": float(self.output_shift), "output_scale": float(self.output_scale)}


@dataclass
class TrainedNetwork:
    """One trained network.

    Attributes:
        mlp: the feynmlp.MLP in physical units (scalings folded in); `mlp.record` holds the
            hyper-parameters, seed, scaling and metrics.
        module: the torch module as trained (acts on scaled inputs, gives scaled targets).
        scaling: the `Scaling` used in training.
        history: per-epoch dicts (epoch, train, validation, lr).
        metrics: final losses (scaled MSE), validation RMSE in physical units, epochs, time.
    """

    mlp: object
    module: object
    scaling: Scaling
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def torch_predict(self, U) -> np.ndarray:
        """The trained torch module on raw inputs U (n, N), unscaled: y in physical units."""
        torch = require_torch()
        param = next(self.module.parameters())
        x = torch.as_tensor(np.asarray(U, dtype=np.float64) / self.scaling.input_scale,
                            dtype=param.dtype)
        with torch.no_grad():
            t = self.module(x).double().numpy()[:, 0]
        return t * self.scaling.output_scale + self.scaling.output_shift


def _check_data(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise FeynmlpError(
            f"training data must be X of shape (n, N) and y of shape (n,), got {X.shape} and {y.shape}")
    if X.shape[0] < 4:
        raise FeynmlpError(f"need at least 4 rows to train (with a validation split), got {X.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise FeynmlpError("training data contain NaN or infinite values; drop those rows first")
    return X, y


def fit_scaling(X, y) -> Scaling:
    """Per-input RMS of X (no shift: U = 0 stays the origin) and mean and spread of y."""
    X, y = _check_data(X, y)
    rms = np.sqrt(np.mean(X * X, axis=0))
    positive = rms[rms > 0]
    fallback = float(np.median(positive)) if positive.size else 1.0
    input_scale = np.where(rms > 0, rms, fallback)
    shift = float(np.mean(y))
    spread = float(np.std(y))
    if not spread > 0:
        spread = max(abs(shift), 1.0)
    return Scaling(input_scale=input_scale, output_shift=shift, output_scale=spread)


def fold_scaling(mlp, scaling: Scaling):
    """The MLP in physical units from one trained on scaled data (see the module docstring)."""
    from feynmlp import MLP

    weights = [w.copy() for w in mlp.weights]
    biases = [b.copy() for b in mlp.biases]
    weights[0] = weights[0] / scaling.input_scale[None, :]
    weights[-1] = weights[-1] * scaling.output_scale
    biases[-1] = biases[-1] * scaling.output_scale + scaling.output_shift
    return MLP(weights, biases, activation=mlp.activation, output_activation=mlp.output_activation)


def _build_module(torch, n_in: int, config: TrainConfig, dtype):
    layers = []
    width = n_in
    activation = getattr(torch.nn, _TORCH_ACTIVATIONS[config.activation])
    for h in config.hidden:
        layers += [torch.nn.Linear(width, h), activation()]
        width = h
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers).to(dtype)


def _progress(enabled: bool, total: int, description: str):
    from tqdm import tqdm
    # disable=None: off when stderr is not a terminal, so logs stay clean.
    return tqdm(total=total, desc=description, unit="epoch", file=sys.stderr, leave=False,
                disable=None if enabled else True)


def train_network(X, y, config: TrainConfig | None = None, seed: int = 0, progress: bool = False,
                  description: str = "train", record: dict | None = None,
                  sample_weights=None) -> TrainedNetwork:
    """Train one MLP N -> hidden -> 1 on (X, y) and return it in physical units.

    Args:
        X: inputs (n, N) in physical units.
        y: targets (n,).
        config: a TrainConfig (default: TrainConfig()).
        seed: seeds the initial weights, the validation split and the minibatch order.
        progress: show a tqdm bar with the losses (on stderr, only on a terminal).
        description: the bar's label.
        record: extra entries for the network's record (data set, iteration, ...).
        sample_weights: optional (n,) positive weights of the squared errors (normalised to
            mean 1), e.g. to make the loss relative rather than absolute.

    Returns:
        A TrainedNetwork; `.mlp.record` holds the config, seed, scaling and metrics, ready for
        `mlp.save(path)`.
    """
    torch = require_torch()
    from feynmlp import MLP

    config = config or TrainConfig()
    X, y = _check_data(X, y)
    scaling = fit_scaling(X, y)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(config.threads))
    start = time.perf_counter()
    try:
        generator = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        n = X.shape[0]
        order = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).permutation(n)
        n_val = max(1, int(round(config.validation_fraction * n)))
        val_rows, train_rows = order[:n_val], order[n_val:]
        xs = torch.as_tensor(X / scaling.input_scale, dtype=dtype)
        ts = torch.as_tensor((y - scaling.output_shift) / scaling.output_scale, dtype=dtype)[:, None]
        if sample_weights is None:
            w = np.ones(n)
        else:
            w = np.asarray(sample_weights, dtype=np.float64)
            if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise FeynmlpError(
                    f"sample_weights must be {n} positive finite numbers, got shape {w.shape}")
            w = w / np.mean(w)
        ws = torch.as_tensor(w, dtype=dtype)[:, None]
        x_train, t_train, w_train = xs[train_rows], ts[train_rows], ws[train_rows]
        x_val, t_val, w_val = xs[val_rows], ts[val_rows], ws[val_rows]
        module = _build_module(torch, X.shape[1], config, dtype)
        optimiser = torch.optim.Adam(module.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        eta_min = min(config.lr_final, config.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs,
                                                               eta_min=eta_min)

        def loss_fn(prediction, target, weight):
            return torch.mean(weight * (prediction - target) ** 2)

        def validation_loss() -> float:
            with torch.no_grad():
                return float(loss_fn(module(x_val), t_val, w_val))

        best = (math.inf, None, 0)
        history = []
        stale = 0
        stopped_early = False
        bar = _progress(progress, config.epochs, description)
        try:
            for epoch in range(1, config.epochs + 1):
                module.train()
                perm = torch.randperm(x_train.shape[0], generator=generator)
                total = 0.0
                for i in range(0, x_train.shape[0], config.batch_size):
                    rows = perm[i:i + config.batch_size]
                    optimiser.zero_grad(set_to_none=True)
                    loss = loss_fn(module(x_train[rows]), t_train[rows], w_train[rows])
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(rows)
                lr = optimiser.param_groups[0]["lr"]
                scheduler.step()
                train_loss = total / x_train.shape[0]
                val = validation_loss()
                history.append({"epoch": epoch, "train": train_loss, "validation": val, "lr": lr})
                if val < best[0]:
                    best = (val, {k: v.clone() for k, v in module.state_dict().items()}, epoch)
                    stale = 0
                else:
                    stale += 1
                bar.set_postfix(train=f"{train_loss:.2e}", val=f"{val:.2e}", refresh=False)
                bar.update(1)
                if not math.isfinite(train_loss):
                    raise FeynmlpError(
                        f"training diverged at epoch {epoch} (loss {train_loss}); lower lr "
                        f"(now {config.lr}) or check the data for extreme values")
                if config.patience and stale >= config.patience:
                    stopped_early = True
                    break
        finally:
            bar.close()
        module.load_state_dict(best[1])
        best_epoch = best[2]
        lbfgs_done = 0
        if config.lbfgs_steps:
            lbfgs_done = _lbfgs_polish(torch, module, lambda: loss_fn(module(x_train), t_train, w_train),
                                       validation_loss, config.lbfgs_steps)
        module.eval()
        with torch.no_grad():
            train_mse = float(loss_fn(module(x_train), t_train, w_train))
        val_mse = validation_loss()
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - start
    raw = MLP.from_torch(module)
    mlp = fold_scaling(raw, scaling)
    metrics = {
        "train_mse_scaled": train_mse,
        "validation_mse_scaled": val_mse,
        "validation_rmse": math.sqrt(val_mse) * scaling.output_scale,
        "weighted": sample_weights is not None,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "lbfgs_steps_run": lbfgs_done,
        "train_rows": int(len(train_rows)),
        "validation_rows": int(n_val),
        "seconds": seconds,
    }
    mlp.record = dict(record or {})
    mlp.record.update({"seed": int(seed), "config": config.as_dict(), "scaling": scaling.as_dict(),
                       "metrics": metrics})
    return TrainedNetwork(mlp=mlp, module=module, scaling=scaling, history=history, metrics=metrics)


def _lbfgs_polish(torch, module, training_loss, validation_loss, steps: int) -> int:
    """Full-batch L-BFGS; keeps the result only if the validation loss improved."""
    before = validation_loss()
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    optimiser = torch.optim.LBFGS(module.parameters(), lr=1.0, max_iter=int(steps),
                                  history_size=50, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        optimiser.zero_grad(set_to_none=True)
        loss = training_loss()
        loss.backward()
        return loss

    optimiser.step(closure)
    after = validation_loss()
    if not (math.isfinite(after) and after < before):
        module.load_state_dict(saved)
        return 0
    return int(optimiser.state[optimiser._params[0]].get("n_iter", steps))


def train_ensemble(X, y, config: TrainConfig | None = None, members: int = 1, seed: int = 0,
                   progress: bool = False, description: str = "train",
                   record: dict | None = None, sample_weights=None) -> list[TrainedNetwork]:
    """`members` networks on the same data with seeds seed*1000 + m (m = 0 .. members-1)."""
    if int(members) < 1:
        raise FeynmlpError(f"members must be a positive integer, got {members!r}")
    out = []
    for m in range(int(members)):
        rec = dict(record or {})
        rec["member"] = m
        out.append(train_network(X, y, config, seed=int(seed) * 1000 + m, progress=progress,
                                 description=f"{description} member {m + 1}/{members}", record=rec,
                                 sample_weights=sample_weights))
    return out
