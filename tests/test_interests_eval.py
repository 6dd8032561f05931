"""Simulated multi-interest users and their metrics (search.interests_eval)."""

from __future__ import annotations

import numpy as np
import pytest

from twofold.core.errors import InputError
from twofold.search.interests_eval import (
    SimUser,
    relevant_sets,
    score_user,
    simulate_users,
)

QRELS = {
    "q1": {"a": 2, "b": 1, "c": 1, "d": 3, "x": 0},
    "q2": {"e": 1, "f": 1, "g": 1, "h": 1, "i": 1},
    "q3": {"j": 1, "k": 1, "l": 1, "m": 1},
    "q4": {"n": 1, "o": 1, "p": 1, "a": 1},
    "q5": {"only": 1, "three": 1, "docs": 1},
}


def test_relevant_sets_need_four_positive_known_docs() -> None:
    rel = relevant_sets(QRELS, lambda d: d != "p")
    # q1: grade 0 'x' dropped (4 left); q4 loses unknown 'p' (3 left); q5 has 3
    assert sorted(rel) == ["q1", "q2", "q3"]
    assert rel["q1"] == ["a", "b", "c", "d"]


def test_simulated_users_split_each_query_in_half() -> None:
    rel = relevant_sets(QRELS, lambda d: True)
    users = simulate_users(rel, 50, seed=7)
    assert users == simulate_users(rel, 50, seed=7)  # deterministic
    assert users != simulate_users(rel, 50, seed=8)
    for u in users:
        assert 2 <= len(u.queries) <= 4 and len(set(u.queries)) == len(u.queries)
        assert set(u.targets) == set(u.queries)
        for q in u.queries:
            half = len(rel[q]) // 2
            assert len(set(rel[q]) & set(u.history)) >= half
            assert not set(u.targets[q]) & set(u.history)
    assert {len(u.queries) for u in users} == {2, 3, 4}


def test_too_few_queries_is_an_input_error() -> None:
    with pytest.raises(InputError, match="only 2 queries"):
        simulate_users({"q1": ["a"] * 4, "q2": ["b"] * 4}, 3, seed=0)


def test_score_user_hand_checked() -> None:
    user = SimUser("u", ("q1", "q2"), ("h1",), {"q1": ("a", "b"), "q2": ("c", "d")})
    vecs = np.eye(3, dtype=np.float32)
    m = score_user(user, ["a", "b", "z"], vecs)
    assert m == {"recall": 0.5, "coverage": 0.5, "ild": pytest.approx(1.0)}
    m = score_user(user, ["a", "d", "z"], vecs)
    assert m["recall"] == 0.5 and m["coverage"] == 1.0
