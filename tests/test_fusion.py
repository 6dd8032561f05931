"""Fusion: hand-computed answers, the missing-document rule, and Hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.core.errors import InputError
from twofold.core.types import Hit, Ranking
from twofold.search.fusion import (
    COMBINATIONS,
    NORMALIZATIONS,
    Combination,
    FusionConfig,
    convex,
    normalize,
    normalize_with_floor,
    rrf,
    score_fusion,
)


def ranking(*pairs: tuple[str, float]) -> Ranking:
    return Ranking("q", tuple(Hit(d, s) for d, s in pairs))


A = ranking(("a", 10.0), ("b", 5.0), ("c", 1.0))
B = ranking(("b", 0.9), ("d", 0.5))


def test_rrf_by_hand() -> None:
    fused = rrf("q", {"x": A, "y": B}, depth=10)
    expected = {
        "a": 1 / 61,
        "b": 1 / 62 + 1 / 61,
        "c": 1 / 63,
        "d": 1 / 62,
    }
    assert fused.doc_ids() == ["b", "a", "d", "c"]
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.doc_id])
    assert fused.hits[0].sources == {"x": (2, 5.0), "y": (1, 0.9)}


def test_rrf_weights_and_k() -> None:
    fused = rrf("q", {"x": A, "y": B}, depth=10, k=0, weights={"x": 3.0})
    # a: 3/1, b: 3/2 + 1/1, c: 3/3, d: 1/2
    assert [(h.doc_id, h.score) for h in fused] == [
        ("a", 3.0),
        ("b", 2.5),
        ("c", 1.0),
        ("d", 0.5),
    ]


def test_normalize_by_hand() -> None:
    assert normalize([3.0, 2.0, 1.0], "min_max") == [1.0, 0.5, 0.0]
    assert normalize([2.0, 2.0], "min_max") == [1.0, 1.0]
    assert normalize([3.0, 1.0], "z_score") == [1.0, -1.0]
    assert normalize([3.0, 4.0], "l2") == [0.6, 0.8]
    assert normalize([], "l2") == []


def test_missing_document_takes_the_lists_floor() -> None:
    # min_max: x -> a 1, b 4/9, c 0; y -> b 1, d 0. Missing from y: 0; from x: 0.
    fused = score_fusion("q", {"x": A, "y": B}, depth=10)
    scores = {h.doc_id: h.score for h in fused}
    assert scores["b"] == pytest.approx((4 / 9 + 1) / 2)
    assert scores["a"] == pytest.approx(0.5)
    assert scores["d"] == pytest.approx(0.0)
    # z_score: the floor is the list's lowest z, not 0 (the mean), so a document that
    # one list missed is not lifted above that list's retrieved hits.
    z = score_fusion("q", {"x": A, "y": B}, depth=10, normalization="z_score")
    zx = dict(zip("abc", normalize([10.0, 5.0, 1.0], "z_score"), strict=True))
    zy = dict(zip("bd", normalize([0.9, 0.5], "z_score"), strict=True))
    by_id = {h.doc_id: h.score for h in z}
    assert by_id["a"] == pytest.approx((zx["a"] + min(zy.values())) / 2)
    assert by_id["d"] == pytest.approx((min(zx.values()) + zy["d"]) / 2)


def test_a_one_hit_list_does_not_lift_documents_it_missed() -> None:
    # The reviewer's repro: bm25 found only A. Its min_max value is 1 and the floor 0
    # (not min(normed) = 1, which ranked B, missing from bm25, above A, found by both).
    bm25 = ranking(("A", 7.0))
    dense = ranking(("B", 0.9), ("A", 0.5), ("C", 0.1))
    fused = convex("q", {"bm25": bm25, "dense": dense}, 10)
    # A: (1 + 0.5) / 2; B: (0 + 1) / 2; C: (0 + 0) / 2
    assert [(h.doc_id, h.score) for h in fused] == [("A", 0.75), ("B", 0.5), ("C", 0.0)]


def test_floor_of_each_normalization_by_hand() -> None:
    assert normalize_with_floor([3.0, 2.0, 1.0], "min_max") == ([1.0, 0.5, 0.0], 0.0)
    assert normalize_with_floor([3.0, 1.0], "z_score") == ([1.0, -1.0], -1.0)
    assert normalize_with_floor([3.0, 4.0], "l2") == ([0.6, 0.8], 0.6)
    # degenerate lists: the floor is one unit below their members
    assert normalize_with_floor([2.0, 2.0], "min_max") == ([1.0, 1.0], 0.0)
    assert normalize_with_floor([7.0], "min_max") == ([1.0], 0.0)
    assert normalize_with_floor([5.0, 5.0], "z_score") == ([0.0, 0.0], -1.0)
    assert normalize_with_floor([-4.0], "l2") == ([-1.0], -2.0)
    assert normalize_with_floor([0.0, 0.0], "l2") == ([0.0, 0.0], -1.0)
    members, floor = normalize_with_floor([3.0, 3.0], "l2")
    assert members == pytest.approx([1 / math.sqrt(2)] * 2)
    assert floor == pytest.approx(1 / math.sqrt(2) - 1)


def test_negative_l2_values_keep_their_order_in_a_geometric_mean() -> None:
    # l2 of negative scores is negative; a clamp at EPS would tie "z" with "c" (missing
    # from x, so at x's floor) and the doc id would put "c" first.
    x = ranking(("z", -1.0), ("b", -2.0))
    y = ranking(("c", 1.0), ("z", 1.0))
    combinations: tuple[Combination, ...] = ("geometric", "harmonic")
    for combination in combinations:
        fused = score_fusion("q", {"x": x, "y": y}, 10, "l2", combination)
        assert fused.doc_ids()[0] == "z", combination


def test_geometric_and_harmonic_by_hand() -> None:
    x = ranking(("a", 4.0), ("b", 2.0))
    y = ranking(("a", 1.0), ("b", 3.0))
    # l2: x -> a 4/sqrt20, b 2/sqrt20; y -> a 1/sqrt10, b 3/sqrt10
    xa, xb, ya, yb = 4 / math.sqrt(20), 2 / math.sqrt(20), 1 / math.sqrt(10), 3 / math.sqrt(10)
    g = score_fusion("q", {"x": x, "y": y}, 10, "l2", "geometric", {"x": 2.0})
    assert {h.doc_id: h.score for h in g} == pytest.approx(
        {"a": (xa**2 * ya) ** (1 / 3), "b": (xb**2 * yb) ** (1 / 3)}
    )
    h = score_fusion("q", {"x": x, "y": y}, 10, "l2", "harmonic")
    assert {h.doc_id: h.score for h in h} == pytest.approx(
        {"a": 2 / (1 / xa + 1 / ya), "b": 2 / (1 / xb + 1 / yb)}
    )


def test_convex_weights_sum_to_one() -> None:
    fused = convex("q", {"x": A, "y": B}, 10, weights={"x": 3.0, "y": 1.0})
    scores = {h.doc_id: h.score for h in fused}
    assert scores["a"] == pytest.approx(0.75)
    assert scores["b"] == pytest.approx(0.75 * 4 / 9 + 0.25)
    assert max(scores.values()) <= 1.0 + 1e-12


def test_empty_list_is_left_out() -> None:
    fused = convex("q", {"x": A, "y": ranking()}, 10, weights={"x": 1.0, "y": 1.0})
    assert fused.doc_ids() == ["a", "b", "c"]
    assert fused.hits[0].score == pytest.approx(1.0)


def test_bad_config_is_an_input_error() -> None:
    with pytest.raises(InputError, match="z_score"):
        score_fusion("q", {"x": A}, 10, "z_score", "geometric")
    with pytest.raises(InputError, match="known: rrf, score, convex"):
        FusionConfig("borda")
    with pytest.raises(InputError, match=">= 0"):
        rrf("q", {"x": A}, 10, weights={"x": -1.0})
    with pytest.raises(InputError, match="unknown fusion fields"):
        FusionConfig.from_dict({"method": "rrf", "alpha": 0.3})


def test_config_round_trip() -> None:
    for config in (
        FusionConfig("rrf", k=10, weights={"bm25": 2.0}),
        FusionConfig("convex", normalization="l2", weights={"bm25": 0.3, "dense": 0.7}),
        FusionConfig("score", normalization="min_max", combination="harmonic"),
    ):
        assert FusionConfig.from_dict(config.to_dict()) == config


# ---- properties ---------------------------------------------------------------------

doc_ids = st.sampled_from([f"d{i}" for i in range(12)])
# Quarter steps: distinct scores stay distinct under the affine maps the properties apply.
scores = st.integers(-200, 200).map(lambda i: i / 4)


@st.composite
def rankings(draw: st.DrawFn) -> dict[str, Ranking]:
    n_lists = draw(st.integers(1, 4))
    out = {}
    for i in range(n_lists):
        ids = draw(st.lists(doc_ids, unique=True, max_size=10))
        values = sorted((draw(scores) for _ in ids), reverse=True)
        out[f"r{i}"] = Ranking("q", tuple(Hit(d, s) for d, s in zip(ids, values, strict=True)))
    return out


configs = st.one_of(
    st.builds(
        FusionConfig,
        method=st.just("rrf"),
        k=st.integers(0, 100),
        weights=st.dictionaries(st.sampled_from(["r0", "r1"]), st.floats(0.1, 5)),
    ),
    st.builds(
        FusionConfig,
        method=st.just("score"),
        normalization=st.sampled_from(["min_max", "l2"]),
        combination=st.sampled_from(COMBINATIONS),
    ),
    st.builds(
        FusionConfig,
        method=st.just("score"),
        normalization=st.just("z_score"),
        combination=st.just("arithmetic"),
    ),
    st.builds(
        FusionConfig,
        method=st.just("convex"),
        normalization=st.sampled_from(NORMALIZATIONS),
        weights=st.dictionaries(st.sampled_from(["r0", "r1", "r2"]), st.floats(0, 1)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(lists=rankings(), config=configs, depth=st.integers(1, 30))
def test_fused_ranking_is_a_ranking_of_the_union(
    lists: dict[str, Ranking], config: FusionConfig, depth: int
) -> None:
    fused = config.fuse("q", lists, depth)
    union = {h.doc_id for r in lists.values() for h in r}
    ids = fused.doc_ids()
    assert len(ids) == len(set(ids))  # no duplicates
    assert len(ids) == min(depth, len(union))  # depth respected, nothing dropped early
    assert set(ids) <= union
    if depth >= len(union):
        assert set(ids) == union  # a permutation of the input documents
    fused_scores = [h.score for h in fused]
    assert fused_scores == sorted(fused_scores, reverse=True)
    assert all(math.isfinite(s) for s in fused_scores)
    for hit in fused:  # per-retriever provenance is the input rank and score
        for name, (rank, score) in hit.sources.items():
            assert lists[name].hits[rank - 1] == Hit(hit.doc_id, score)


@settings(max_examples=200, deadline=None)
@given(lists=rankings(), scale=st.floats(0.01, 100), shift=st.floats(-100, 100))
def test_rrf_ignores_score_scale(lists: dict[str, Ranking], scale: float, shift: float) -> None:
    rescaled = {
        name: Ranking("q", tuple(Hit(h.doc_id, h.score * scale + shift) for h in r))
        for name, r in lists.items()
    }
    assert rrf("q", lists, 50).doc_ids() == rrf("q", rescaled, 50).doc_ids()


@settings(max_examples=200, deadline=None)
@given(lists=rankings(), scale=st.floats(0.5, 20), shift=st.floats(-10, 10))
def test_min_max_fusion_ignores_affine_rescaling(
    lists: dict[str, Ranking], scale: float, shift: float
) -> None:
    name = next(iter(lists))
    rescaled = dict(lists)
    rescaled[name] = Ranking(
        "q", tuple(Hit(h.doc_id, h.score * scale + shift) for h in lists[name])
    )
    before = {h.doc_id: h.score for h in convex("q", lists, 50)}
    after = {h.doc_id: h.score for h in convex("q", rescaled, 50)}
    assert after == pytest.approx(before, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(lists=rankings())
def test_a_document_first_everywhere_wins(lists: dict[str, Ranking]) -> None:
    tops = {r.hits[0].doc_id for r in lists.values() if r.hits}
    if len(tops) != 1:
        return
    (top,) = tops
    best = [r.hits[0].score for r in lists.values() if r.hits]
    for config in (FusionConfig("rrf"), FusionConfig("convex")):
        fused = config.fuse("q", lists, 50)
        assert fused.hits[0].score == pytest.approx(max(h.score for h in fused)), (
            "top score is the maximum"
        )
        if all(r.hits and r.hits[0].doc_id == top for r in lists.values()) and best:
            assert top in {h.doc_id for h in fused if h.score == fused.hits[0].score}


# Every fusion the module allows: RRF, and each normalization x combination (z_score
# only with the arithmetic mean), weighted or not.
positive_weights = st.none() | st.dictionaries(
    st.sampled_from(["r0", "r1", "r2", "r3"]), st.floats(0.1, 10)
)
all_fusions = st.one_of(
    st.builds(lambda w: FusionConfig("rrf", weights=w or {}), positive_weights),
    *(
        st.builds(
            lambda w, n=n, c=c: FusionConfig(
                "score", normalization=n, combination=c, weights=w or {}
            ),
            positive_weights,
        )
        for n in NORMALIZATIONS
        for c in COMBINATIONS
        if n != "z_score" or c == "arithmetic"
    ),
    *(
        st.builds(
            lambda w, n=n: FusionConfig("convex", normalization=n, weights=w or {}),
            positive_weights,
        )
        for n in NORMALIZATIONS
    ),
)


@st.composite
def rankings_with_a_top_document(draw: st.DrawFn) -> dict[str, Ranking]:
    """1-4 lists, each with "zz" (last by doc id, so a tie would put it below) first."""
    out = {}
    for i in range(draw(st.integers(1, 4))):
        ids = draw(st.lists(doc_ids, unique=True, max_size=6))
        values = sorted((draw(scores) for _ in ids), reverse=True)
        top = max(values, default=draw(scores)) + draw(st.integers(0, 4)) / 4  # ties allowed
        hits = (Hit("zz", top), *(Hit(d, s) for d, s in zip(ids, values, strict=True)))
        out[f"r{i}"] = Ranking("q", hits)
    return out


@settings(max_examples=300, deadline=None)
@given(lists=rankings_with_a_top_document(), config=all_fusions)
def test_a_document_first_in_every_list_beats_one_a_list_missed(
    lists: dict[str, Ranking], config: FusionConfig
) -> None:
    ids = config.fuse("q", lists, 100).doc_ids()
    for doc_id in ids:
        missed = [n for n, r in lists.items() if doc_id not in r.doc_ids()]
        if missed:
            assert ids.index("zz") < ids.index(doc_id), (doc_id, missed, config.describe())


def _reference_mean(
    lists: dict[str, Ranking], weights: dict[str, float], normalization: str
) -> dict[str, float]:
    """The arithmetic fused score written out per document and list, the module
    docstring's rule: the weighted mean of normalized values, a missing document at its
    list's floor, empty lists and zero weights left out."""
    normed: dict[str, tuple[dict[str, float], float]] = {}
    for name, r in lists.items():
        first: dict[str, float] = {}
        for h in r.hits:
            first.setdefault(h.doc_id, h.score)
        if first:
            values, floor = normalize_with_floor(list(first.values()), normalization)  # type: ignore[arg-type]
            normed[name] = (dict(zip(first, values, strict=True)), floor)
    docs = {h.doc_id for r in lists.values() for h in r.hits}
    out = {}
    for d in docs:
        pairs = [(weights.get(n, 1.0), v.get(d, f)) for n, (v, f) in normed.items()]
        pairs = [(w, x) for w, x in pairs if w > 0]
        total = sum(w for w, _ in pairs)
        out[d] = sum(w * x for w, x in pairs) / total if total > 0 else 0.0
    return out


@settings(max_examples=200, deadline=None)
@given(
    lists=rankings(),
    weights=st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.0]), min_size=4, max_size=4),
    normalization=st.sampled_from(NORMALIZATIONS),
)
def test_the_arithmetic_mean_is_the_per_document_rule(
    lists: dict[str, Ranking], weights: list[float], normalization: str
) -> None:
    """``score_fusion``'s arithmetic path adds each list's hits to the floors instead of
    visiting every (document, list) pair; it must give the per-document scores."""
    named = dict(zip(lists, weights, strict=False))
    fused = score_fusion("q", lists, 1000, normalization, "arithmetic", named)  # type: ignore[arg-type]
    want = _reference_mean(lists, named, normalization)
    assert {h.doc_id: h.score for h in fused} == pytest.approx(want, rel=1e-9, abs=1e-9)


@given(
    values=st.lists(
        st.sampled_from([0.1 + 0.2, 0.3, 0.30000000000000004, 0.7, -0.5, -0.5000000000001, 0.0]),
        min_size=1,
        max_size=80,
    ),
    depth=st.integers(1, 20),
)
def test_the_head_of_a_long_list_is_the_head_of_the_full_sort(
    values: list[float], depth: int
) -> None:
    """``_ranked`` settles and heaps only the scores near the cut when the depth is short;
    near-ties from summation order (0.1 + 0.2 against 0.3) still tie, ordered by doc id,
    exactly as a full sort of every settled score orders them."""
    from twofold.core.types import settle
    from twofold.search.fusion import _ranked

    scores = {f"d{i:03d}": v for i, v in enumerate(values)}
    sources = {d: {"r": (1, v)} for d, v in scores.items()}
    full = sorted(((d, settle(s)) for d, s in scores.items()), key=lambda p: (-p[1], p[0]))
    got = _ranked("q", scores, sources, depth)
    assert [(h.doc_id, h.score) for h in got.hits] == full[:depth]
    lazy = _ranked("q", scores, lambda kept: {d: sources[d] for d in kept}, depth)
    assert lazy == got
