"""kNN-Embed mixtures (twofold.models.knn_embed): hand-checked cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.models.knn_embed import (
    MixtureParams,
    allocate_budget,
    build_mixture,
    component_queries,
    intra_list_diversity,
    smooth_mixture,
    soft_memberships,
    user_mixture,
    user_vector,
)


@pytest.mark.parametrize(
    ("weights", "budget", "expected"),
    [
        ([0.5, 0.3, 0.2], 10, [5, 3, 2]),
        # quotas 1.8, 1.4, 0.8 -> floors 1, 1, 0; remainders tie at .8: larger weight first
        ([0.45, 0.35, 0.2], 4, [2, 1, 1]),
        # quotas 1.8, 0.9, 0.3 -> floors 1, 0, 0; two slots to remainders .9 then .8
        ([0.6, 0.3, 0.1], 3, [2, 1, 0]),
        # unnormalized weights: quotas 2.5, 1.25, 1.25
        ([2.0, 1.0, 1.0], 5, [3, 1, 1]),
        # thirds must not lose a slot to float error
        ([1 / 3, 1 / 3, 1 / 3], 3, [1, 1, 1]),
        # equal remainders and weights: lower index first
        ([0.25, 0.25, 0.25, 0.25], 2, [1, 1, 0, 0]),
        ([0.0, 1.0], 7, [0, 7]),
        ([0.7, 0.3], 0, [0, 0]),
    ],
)
def test_allocate_budget_hand_checked(
    weights: list[float], budget: int, expected: list[int]
) -> None:
    assert allocate_budget(weights, budget).tolist() == expected


def test_allocate_budget_rejects_negative_budget() -> None:
    with pytest.raises(ValueError, match="budget"):
        allocate_budget([1.0], -1)


@settings(max_examples=300, deadline=None)
@given(
    weights=st.lists(
        st.floats(min_value=0.0, max_value=1e3, allow_nan=False), min_size=1, max_size=40
    ),
    budget=st.integers(min_value=0, max_value=500),
)
def test_allocate_budget_sums_and_is_proportional(weights: list[float], budget: int) -> None:
    w = np.asarray(weights)
    alloc = allocate_budget(w, budget)
    if w.sum() <= 0:
        assert alloc.sum() == 0
        return
    assert int(alloc.sum()) == budget
    quotas = budget * w / w.sum()
    assert np.all(np.abs(alloc - quotas) < 1.0 + 1e-9)
    assert np.all(alloc[w == 0] == 0)
    # a heavier component never gets fewer slots (Hamilton rounding is monotone)
    for i in range(len(w)):
        for j in range(len(w)):
            if w[i] > w[j]:
                assert alloc[i] >= alloc[j]


def test_build_mixture_drops_zero_components_and_orders_by_weight() -> None:
    mix = build_mixture([0.1, 0.6, 0.3], 3)
    assert [(c.cluster, c.budget) for c in mix.components] == [(1, 2), (2, 1)]
    assert mix.budget == 3


def test_build_mixture_max_components_gives_budget_to_the_heaviest() -> None:
    mix = build_mixture([0.2, 0.5, 0.3], 10, max_components=2)
    assert [(c.cluster, c.budget) for c in mix.components] == [(1, 6), (2, 4)]


def test_soft_memberships_hand_checked() -> None:
    centroids = np.eye(2, dtype=np.float32)
    p = soft_memberships([[1.0, 0.0]], centroids, temperature=1.0)
    e = math.e
    assert p[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], rel=1e-6)
    hard = soft_memberships([[0.2, 0.9], [3.0, 1.0]], centroids, temperature=0.0)
    assert hard.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_smoothing_hand_made_example() -> None:
    # hard memberships: history 2/3 in cluster 0, 1/3 in cluster 1; neighbours all in 1.
    centroids = np.eye(2, dtype=np.float32)
    history = np.array([[1, 0.1], [1, 0.2], [0.1, 1]], dtype=np.float32)
    neighbours = np.array([[0, 1], [0.3, 1]], dtype=np.float32)
    params = MixtureParams(temperature=0.0, neighbour_weight=0.25, uniform_weight=0.2)
    mix = user_mixture(history, neighbours, centroids, budget=15, params=params)
    # 0.55 * [2/3, 1/3] + 0.25 * [0, 1] + 0.2 / 2
    expected = [0.55 * 2 / 3 + 0.1, 0.55 / 3 + 0.25 + 0.1]
    assert mix.weights.tolist() == pytest.approx(expected, rel=1e-6)
    # quotas 7.0, 8.0
    assert [(c.cluster, c.budget) for c in mix.components] == [(1, 8), (0, 7)]


def test_smoothing_without_neighbours_gives_their_weight_to_history() -> None:
    mix = smooth_mixture([0.75, 0.25], None, neighbour_weight=0.5, uniform_weight=0.2)
    assert mix.tolist() == pytest.approx([0.8 * 0.75 + 0.1, 0.8 * 0.25 + 0.1])


def test_uniform_prior_alone_is_uniform() -> None:
    mix = smooth_mixture([1.0, 0.0, 0.0, 0.0], [1.0, 0, 0, 0], 0.0, 1.0)
    assert mix.tolist() == pytest.approx([0.25] * 4)


def test_params_validation_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="neighbour_weight"):
        MixtureParams(neighbour_weight=1.5).validate()
    with pytest.raises(ValueError, match="<= 1"):
        MixtureParams(neighbour_weight=0.7, uniform_weight=0.7).validate()
    with pytest.raises(ValueError, match="query_mode"):
        MixtureParams(query_mode="x").validate()  # type: ignore[arg-type]


def test_component_queries_modes() -> None:
    centroids = np.eye(3, dtype=np.float32)
    history = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    user = user_vector(history)
    assert user.tolist() == pytest.approx([2**-0.5, 2**-0.5, 0])
    same = component_queries(history, centroids, [0, 1], MixtureParams(query_mode="user"))
    assert np.allclose(same, user[None, :])
    params = MixtureParams(temperature=0.0, query_mode="component", component_blend=0.0)
    q = component_queries(history, centroids, [0, 1, 2], params)
    # cluster 0 -> the item in it; cluster 1 -> its item; cluster 2 untouched -> centroid
    assert np.allclose(q, np.eye(3), atol=1e-6)


def test_intra_list_diversity() -> None:
    assert intra_list_diversity(np.eye(3)) == pytest.approx(1.0)
    assert intra_list_diversity([[1.0, 0.0], [2.0, 0.0]]) == pytest.approx(0.0)
    assert intra_list_diversity([[1.0, 0.0]]) == 0.0
