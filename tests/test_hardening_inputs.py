"""Absurd sizes, non-finite numbers and near-threshold potentials.

In: requests no user should make but some will (order 10,000, thousands of variables at order
4, NaN/inf in weights, points, directions and potentials, potentials on the edge of binding).
Out: checks that each fails fast with a FeynmlpError (ResourceLimitError for sizes, with the
estimate in the message, raised before the big allocation: tracemalloc sees only a small
peak), and that near-threshold potentials are reported by the bound-state count and the
shallow filter while their scattering lengths still match the closed form of a square well.

"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import feynmlp
from feynmlp import kernels, model_io
from feynmlp.born import born_series, exact_scattering, potentials
from feynmlp.errors import FeynmlpError, ModelFileError, ResourceLimitError


def small_mlp(n_in=2, activation="tanh", scale=0.5):
    rng = np.random.default_rng(1)
    return feynmlp.MLP([scale * rng.normal(size=(3, n_in)), scale * rng.normal(size=(1, 3))], None, activation)


def peak_bytes(call) -> tuple[BaseException | None, int]:
    """(the exception `call` raised or None, the peak of traced allocations during it)."""
    tracemalloc.start()
    try:
        call()
        error = None
    except BaseException as exc:  # noqa: BLE001 - handed back to the test
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# ----------------------------------------------------------------------------- absurd orders

BAD_ORDERS = [10_000, 10**100, 17, 0, -1, 2.5, np.float64(2.0), "3", True, None, [2]]


@pytest.mark.parametrize("order", BAD_ORDERS, ids=repr)
def test_bad_orders_fail_fast_everywhere(order):
    mlp = small_mlp()
    for call in (lambda: kernels.kernel_module("tanh", order),
                 lambda: feynmlp.taylor(mlp, [0.1, 0.2], order),
                 lambda: feynmlp.directional(mlp, [0.1, 0.2], [1.0, 0.0], order)):
        error, peak = peak_bytes(call)
        assert isinstance(error, FeynmlpError), error
        assert repr(order) in str(error) or str(order) in str(error)
        assert peak < 2**20


def test_order_above_the_maximum_names_the_limit_and_the_alternative():
    with pytest.raises(FeynmlpError, match=f"largest supported order {kernels.MAX_ORDER}.*directional"):
        feynmlp.taylor(small_mlp(), [0.0, 0.0], 10_000)


@pytest.mark.parametrize("alpha", [[2**70, 0], [10**9, 0], [40, 0]])
def test_diagram_contributions_of_an_absurd_order_fail_fast(alpha):
    error, peak = peak_bytes(lambda: feynmlp.diagram_contributions(small_mlp(), [0.0, 0.0], alpha))
    assert isinstance(error, FeynmlpError) and "above the largest supported order" in str(error)
    assert peak < 2**20


def test_numpy_integer_orders_are_accepted():
    module = kernels.kernel_module("tanh", np.int64(2))
    assert module.ORDER == 2
    assert kernels.validate_order(np.int32(3)) == 3 and type(kernels.validate_order(np.int32(3))) is int


# ----------------------------------------------------------------------------- sizes

def test_thousands_of_variables_at_order_four_are_refused_before_allocation():
    mlp = small_mlp(n_in=2000)
    error, peak = peak_bytes(lambda: feynmlp.taylor(mlp, np.zeros(2000), 4))
    assert isinstance(error, ResourceLimitError) and isinstance(error, MemoryError)
    message = str(error)
    coefficients = math.comb(2004, 4)
    assert f"{coefficients} coefficients" in message and "GiB" in message and "2000 variables" in message
    assert "wrt=" in message and "FEYNMLP_MAX_MEMORY_GB" in message
    assert peak < 16 * 2**20  # the weights are 48 kB; nothing near the estimate was allocated


def test_the_memory_limit_is_configurable_and_counts_the_batch(monkeypatch):
    mlp = small_mlp(n_in=4)
    points = np.zeros((20_000, 4))
    feynmlp.taylor(mlp, points[:10], 3)  # fine
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", "0.01")
    # 35 coefficients x 3 neurons x 20000 points x 8 bytes x (2 layers + output) ~ 0.03 GiB
    with pytest.raises(ResourceLimitError, match=r"order 3 in 4 variables for 20000 point\(s\) needs about [0-9.]+ (GiB|MiB)"):
        feynmlp.taylor(mlp, points, 3)
    with pytest.raises(ResourceLimitError, match="directional expansion of order 4"):
        feynmlp.directional(mlp, np.zeros((200_000, 4)), np.ones(4), 4)


def test_dense_derivative_tensors_are_refused_before_allocation(monkeypatch):
    expansion = feynmlp.taylor(small_mlp(n_in=40, scale=0.05), np.zeros(40), 4)
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", "0.01")
    error, peak = peak_bytes(lambda: expansion.derivative_tensor(4))
    assert isinstance(error, ResourceLimitError) and "40^4" in str(error)
    assert peak < 2**20
    assert expansion.derivative_tensor(2).shape == (1, 40, 40)  # small ones still work


def test_networks_with_huge_inputs_are_refused_before_allocation():
    """A network of 10^9 inputs cannot even be built (a (3, 10^9) weight is 24 GB, allocated by
    the caller); at 10^5 inputs the weights are small but the order-2 expansion (5e9
    coefficients per neuron) is not: refused from the estimate alone."""
    mlp = small_mlp(n_in=100_000, scale=0.01)
    error, peak = peak_bytes(lambda: feynmlp.taylor(mlp, np.zeros(100_000), 2))
    assert isinstance(error, ResourceLimitError) and "100000 variables" in str(error)
    assert f"{math.comb(100_002, 2)} coefficients" in str(error)
    assert peak < 32 * 2**20  # the points and index lists only


def test_vertex_tables_count_towards_the_memory_limit(monkeypatch):
    from feynmlp import multi_index

    multi_index.vertex_tables.cache_clear()
    monkeypatch.setenv("FEYNMLP_MAX_MEMORY_GB", "0.02")  # the series of this request take 2 MB
    error, peak = peak_bytes(lambda: feynmlp.taylor(small_mlp(n_in=30, scale=0.05), np.zeros(30), 4))
    assert isinstance(error, ResourceLimitError), f"no refusal; peak {peak / 2**20:.0f} MiB"


def test_an_absurdly_long_wrt_fails_fast_with_a_short_message():
    error, peak = peak_bytes(lambda: feynmlp.taylor(small_mlp(), [0.0, 0.0], 1, wrt=range(10**5)))
    assert isinstance(error, FeynmlpError)
    assert len(str(error)) < 1000 and peak < 2**20


# ----------------------------------------------------------------------------- non-finite numbers

@pytest.mark.parametrize("where", ["weight", "bias"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_and_biases_are_refused(where, bad):
    weights = [np.ones((3, 2)), np.ones((1, 3))]
    biases = [np.zeros(3), np.zeros(1)]
    (weights if where == "weight" else biases)[1].flat[0] = bad
    with pytest.raises(FeynmlpError, match=f"layer 1 {where} has 1 non-finite entry"):
        feynmlp.MLP(weights, biases, "tanh")


def test_non_finite_torch_weights_are_refused():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        module[2].weight[0, 1] = float("nan")
    with pytest.raises(FeynmlpError, match="non-finite"):
        feynmlp.MLP.from_torch(module)


def test_model_file_with_non_finite_weights_is_refused(tmp_path):
    import json

    from safetensors.numpy import save_file

    mlp = small_mlp()
    path = tmp_path / "model.safetensors"
    mlp.save(path)
    document = feynmlp.read_metadata(path)
    weight = mlp.weights[1].copy()
    weight[0, 0] = np.inf
    tensors = {f"layers.{l}.{kind}": (arr if (l, kind) != (1, "weight") else weight)
               for l in range(2) for kind, arr in (("weight", mlp.weights[l]), ("bias", mlp.biases[l]))}
    # A consistent checksum, so that the finiteness check itself is what refuses the file.
    document["tensors"]["layers.1.weight"]["sha256"] = model_io._sha256(weight)
    save_file(tensors, str(path), metadata={"feynmlp": json.dumps(document)})
    with pytest.raises(ModelFileError, match="non-finite"):
        feynmlp.load(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_and_directions_are_refused(bad):
    mlp = small_mlp()
    with pytest.raises(FeynmlpError, match=r"x contains 1 NaN or infinite value\(s\) \(first at index \(1, 0\)\)"):
        feynmlp.taylor(mlp, [[0.0, 0.0], [bad, 0.0]], 2)
    with pytest.raises(FeynmlpError, match="v contains 1 NaN or infinite"):
        feynmlp.directional(mlp, [0.0, 0.0], [0.0, bad], 2)
    with pytest.raises(FeynmlpError, match="NaN or infinite"):
        feynmlp.diagram_contributions(mlp, [bad, 0.0], [1, 1])


@pytest.mark.parametrize("function", [exact_scattering.scattering_length, exact_scattering.bound_state_count,
                                      exact_scattering.is_shallow, lambda U: born_series.born_terms(U, 3)],
                         ids=["scattering_length", "bound_state_count", "is_shallow", "born_terms"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_potentials_are_refused(function, bad):
    U = -np.ones((2, 8))
    U[1, 5] = bad
    with pytest.raises(FeynmlpError, match=r"non-finite step value .* at index \(1, 5\)"):
        function(U)


def test_overflow_inside_the_network_is_not_returned_silently():
    mlp = feynmlp.MLP([100 * np.ones((3, 2)), np.ones((1, 3))], None, "exp")
    with pytest.raises(FeynmlpError, match="overflow|non-finite|infinite"):
        feynmlp.taylor(mlp, [10.0, 10.0], 2)
    with pytest.raises(FeynmlpError, match="overflow"):
        feynmlp.directional(mlp, [10.0, 10.0], [1.0, 0.0], 2)
    # On request the overflow comes back as inf, as the arithmetic gives it.
    with np.errstate(over="ignore", invalid="ignore"):
        coefficients = feynmlp.taylor(mlp, [10.0, 10.0], 2, nonfinite="propagate").coefficients
    assert np.isinf(coefficients).any()


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_complex_points_are_refused():
    with pytest.raises(FeynmlpError, match="complex"):
        feynmlp.taylor(small_mlp(), np.array([1 + 1j, 2.0]), 1)


@pytest.mark.parametrize("points", [[0.0, []], [[1.0, 2.0], [3.0]]])
def test_ragged_points_are_refused(points):
    # Found by the fuzz test: numpy's complex test itself raised ValueError on ragged lists.
    with pytest.raises(FeynmlpError, match="array of numbers"):
        feynmlp.taylor(small_mlp(), points, 1)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_points_beyond_float32_are_refused_for_float32():
    with pytest.raises(FeynmlpError, match="float32"):
        feynmlp.taylor(small_mlp(), [0.0, 1e300], 1, dtype=np.float32)


def test_unknown_dtype_names_are_a_feynmlp_error():
    with pytest.raises(FeynmlpError, match="dtype"):
        feynmlp.taylor(small_mlp(), [0.0, 0.0], 1, dtype="nonsense")


@pytest.mark.parametrize("alpha", [[0.5, 0.5], [1.0, 1.0], ["a", "b"], [None, 1], [[], [0]]], ids=repr)
def test_non_integer_exponents_are_a_feynmlp_error(alpha):
    with pytest.raises(FeynmlpError, match="alpha"):
        feynmlp.diagram_contributions(small_mlp(), [0.0, 0.0], alpha)


# ----------------------------------------------------------------------------- near threshold

THRESHOLD = math.pi ** 2 / 4  # a square well of range 1 binds its first state at this depth


@pytest.mark.parametrize("offset", [-1e-2, -1e-6, 1e-6, 1e-2])
def test_square_well_near_its_first_bound_state(offset):
    """Across the threshold a jumps from -inf to +inf: the values on both sides are right
    (closed form), and the bound-state count and the shallow filter report the crossing."""
    depth = THRESHOLD + offset
    U = np.full(64, -depth)
    a, n_bound = exact_scattering.scattering_length_and_bound_states(U)
    closed_form = 1 - math.tan(math.sqrt(depth)) / math.sqrt(depth)
    assert a == pytest.approx(closed_form, rel=1e-7)
    assert abs(a) > 10 and np.sign(a) == np.sign(offset)
    assert n_bound == (1 if offset > 0 else 0)
    assert bool(exact_scattering.has_bound_state(U)) == (offset > 0)
    assert not exact_scattering.is_shallow(U, a_max=10.0)  # near threshold, either side
    assert bool(exact_scattering.is_shallow(U)) == (offset < 0)


def test_born_series_past_threshold_diverges_and_the_bound_state_is_reported():
    """The Born terms are exact on both sides; past threshold their partial sums do not
    approach a, which is why the bound-state count (not the series) must gate their use."""
    below, beyond = np.full(64, -0.5 * THRESHOLD), np.full(64, -1.2 * THRESHOLD)
    terms_below = born_series.born_terms(below, 30)
    assert np.sum(terms_below) == pytest.approx(exact_scattering.scattering_length(below), rel=1e-6)
    terms_beyond = born_series.born_terms(beyond, 30)
    assert abs(terms_beyond[-1]) > abs(terms_beyond[-2]) > 1  # growing terms: no convergence
    assert exact_scattering.bound_state_count(beyond) == 1 and exact_scattering.bound_state_count(below) == 0


def test_sampled_shallow_potentials_exclude_the_threshold_region():
    U, _, a = potentials.sample_potentials_with_a(300, grid=16, seed=3, depth_range=(1.0, 6.0), a_max=5.0)
    a_exact, n_bound = exact_scattering.scattering_length_and_bound_states(U)
    assert np.all(n_bound == 0) and np.all(np.abs(a) <= 5.0)
    np.testing.assert_array_equal(a, a_exact)
