from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from implicit_bias.problems import Problem, single_equation
from implicit_bias.references import _by_lp, distances, interpolants


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 6), elements=st.floats(0.1, 10)),
       arrays(np.float64, 6, elements=st.sampled_from([-1.0, 1.0])), st.floats(-10, 10, allow_nan=False))
def test_rank_one_closed_forms_agree_with_the_lp_and_pinv(magnitudes, signs, b):
    a = magnitudes * signs[: magnitudes.size]
    closed = interpolants(single_equation(a, b, None))
    np.testing.assert_allclose(closed["min_l2"], np.linalg.pinv(a[None]) @ [b], rtol=1e-12, atol=1e-12)
    by_lp = _by_lp(a[None], np.array([b]))
    # HiGHS solves to an absolute feasibility tolerance of 1e-7, so agreement is checked at
    # 1e-6; optimal values for ℓ1, whose minimizer is not unique when entries tie
    assert abs(np.sum(np.abs(closed["min_l1"])) - np.sum(np.abs(by_lp["min_l1"]))) <= 1e-6 * (1 + abs(b))
    np.testing.assert_allclose(closed["min_linf"], by_lp["min_linf"], rtol=1e-6, atol=1e-6)


def test_two_equations_by_lp():
    A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    b = np.array([1.0, 1.0])
    points = interpolants(Problem(A, b, np.zeros(3)))
    for name, point in points.items():
        np.testing.assert_allclose(A @ point, b, atol=1e-9, err_msg=name)
    assert np.max(np.abs(points["min_linf"])) <= np.max(np.abs(points["min_l2"])) + 1e-9
    assert np.sum(np.abs(points["min_l1"])) <= np.sum(np.abs(points["min_l2"])) + 1e-9


def test_inconsistent_systems_have_no_references():
    A = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert interpolants(Problem(A, np.array([1.0, 2.0]), np.zeros(2))) == {}


def test_homework_references_and_distances():
    a = np.array([1.0, 0.1, 0.01])
    points = interpolants(single_equation(a, 1.0, None))
    np.testing.assert_allclose(points["min_l2"], a / 1.0101, rtol=1e-15)
    np.testing.assert_allclose(points["min_l1"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(points["min_linf"], np.full(3, 1 / 1.11), rtol=1e-15)
    d = distances(points["min_linf"], points)
    assert d["min_linf"]["distance"] == 0.0 and d["min_l2"]["distance"] > 0.09


def test_the_lp_references_scale_to_wide_systems():
    # the ℓ∞ LP has 2d inequality rows over d + 1 variables: dense, that is 16 d² bytes
    # (256 MB here, 160 GB at d = 10^5); sparse, it is O(d)
    import tracemalloc

    from implicit_bias.problems import gaussian

    p = gaussian(2, 4000, None, 0, None)
    tracemalloc.start()
    found = interpolants(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB"
    assert set(found) == {"min_l2", "min_l1", "min_linf"}
    for point in found.values():
        assert np.max(np.abs(p.A @ point - p.b)) <= 1e-6 * np.max(np.abs(p.b))
