"""``POST /v1/search`` with ``diversify`` (kNN-Embed over a query's neighbourhood), through a
real uvicorn on 127.0.0.1: a small three-topic collection built with bm25, dense (the
real minilm-l6 encoder) and three interest clusters, beside a bm25-only one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.settings import Settings
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, InterestOptions

TOPICS = {
    "heat": [
        "laminar boundary layer heat transfer on a heated flat plate",
        "heat transfer coefficients in turbulent pipe flow",
        "convective heat transfer from a cylinder in cross flow",
        "temperature recovery factor and heat flux in a boundary layer",
        "cooling of a hot wall by a film of cold air",
        "stanton number measurements for heat transfer at high speed",
        "thermal boundary layer with wall suction and heat transfer",
        "aerodynamic heating and wall temperature of a re-entry body",
    ],
    "shells": [
        "buckling of thin cylindrical shells under axial compression",
        "elastic stability of spherical shells under external pressure",
        "buckling loads of stiffened cylinders in bending",
        "post-buckling behaviour of thin curved panels",
        "imperfection sensitivity of shell buckling loads",
        "vibration and buckling of conical shells",
        "thin-walled cylinders under torsion: buckling stress",
        "initial imperfections and collapse of pressurized shells",
    ],
    "wings": [
        "lift and drag of swept wings at low speed",
        "induced drag of a finite wing with elliptic loading",
        "wing tip vortices and downwash behind a lifting wing",
        "pitching moment of a delta wing at high angle of attack",
        "aspect ratio effects on the lift curve slope of wings",
        "flutter of a cantilever wing in subsonic flow",
        "stall of an airfoil section and maximum lift",
        "lifting line theory for wings of arbitrary planform",
    ],
}
DOCS = [
    {"_id": f"{topic}{i}", "title": "", "text": text}
    for topic, texts in TOPICS.items()
    for i, text in enumerate(texts)
]
# A query across two of the three topics.
TWO_TOPICS = "heat transfer in a boundary layer and buckling of thin shells"


def _build(
    root: Path, name: str, retrievers: tuple[str, ...], n_clusters: int | None = None
) -> Path:
    corpus = root / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    out = root / name
    options = BuildOptions(
        retrievers=retrievers,
        interests=InterestOptions(n_clusters=n_clusters),
        progress=False,
    )
    build_collection(corpus, out, options)
    return out


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("diversify")
    topics = _build(root, "topics", ("bm25", "dense", "interests"), n_clusters=3)
    plain = _build(root, "plain", ("bm25",))
    settings = Settings(collections=[topics, plain], default_pipeline="dense", warmup=False)
    with run_in_thread(settings) as base:
        yield base


def post(base: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, timeout=60)


def stable(body: dict[str, object]) -> dict[str, object]:
    """A search response without what changes from call to call."""
    return {k: v for k, v in body.items() if k not in ("request_id", "took_ms", "timings_ms")}


@pytest.mark.parametrize("pipeline", ["dense", "bm25", "hybrid"])
def test_diversify_returns_k_unique_hits_over_several_interests(
    base_url: str, pipeline: str
) -> None:
    body = {"query": TWO_TOPICS, "k": 6, "pipeline": pipeline, "diversify": True}
    r = post(base_url, "/v1/search", body)
    assert r.status_code == 200, r.text
    data = r.json()
    ids = [h["doc_id"] for h in data["hits"]]
    assert len(ids) == len(set(ids)) == 6
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3, 4, 5, 6]
    interests = [h["interest"] for h in data["hits"]]
    assert all(i in (0, 1, 2) for i in interests)
    assert len(set(interests)) > 1
    mixture = data["mixture"]
    assert mixture and sum(c["budget"] for c in mixture) <= 6
    assert [c["weight"] for c in mixture] == sorted((c["weight"] for c in mixture), reverse=True)
    assert {c["interest"] for c in mixture} <= {0, 1, 2}
    assert "diversify" in data["timings_ms"]
    # documents of one topic share an interest cluster: the clusters are the topics
    topic_of = {h["doc_id"]: h["doc_id"].rstrip("0123456789") for h in data["hits"]}
    by_interest: dict[int, set[str]] = {}
    for h in data["hits"]:
        by_interest.setdefault(h["interest"], set()).add(topic_of[h["doc_id"]])
    assert all(len(topics) == 1 for topics in by_interest.values())
    if pipeline == "bm25":  # no wing document shares a word with the query
        assert set(topic_of.values()) == {"heat", "shells"}


def test_diversify_spreads_what_plain_search_keeps_on_one_topic(base_url: str) -> None:
    # the neighbourhood (the top 20 of the pipeline's list) is most of these 24 documents,
    # so even a one-topic query's mixture keeps every interest
    query = "heat transfer in a laminar boundary layer"
    plain = post(base_url, "/v1/search", {"query": query, "k": 5, "pipeline": "dense"})
    div = post(
        base_url, "/v1/search", {"query": query, "k": 5, "pipeline": "dense", "diversify": True}
    )
    assert plain.status_code == div.status_code == 200, (plain.text, div.text)
    plain_ids = [h["doc_id"] for h in plain.json()["hits"]]
    div_hits = div.json()["hits"]
    assert all(d.startswith("heat") for d in plain_ids)
    assert div_hits[0]["doc_id"] == plain_ids[0]
    assert len({h["interest"] for h in div_hits}) > 1


def test_diversify_false_leaves_the_response_unchanged(base_url: str) -> None:
    body: dict[str, object] = {"query": TWO_TOPICS, "k": 6, "pipeline": "hybrid"}
    default = post(base_url, "/v1/search", body)
    off = post(base_url, "/v1/search", {**body, "diversify": False})
    assert default.status_code == off.status_code == 200
    assert stable(default.json()) == stable(off.json())
    data = off.json()
    assert "mixture" not in data and "diversify" not in data["timings_ms"]
    assert all("interest" not in h for h in data["hits"])
    fields = "rank doc_id score title text snippet highlights title_highlights sources"
    assert set(data["hits"][0]) == set(fields.split())


def test_batch_diversifies_only_the_searches_that_ask(base_url: str) -> None:
    searches = [
        {"query": TWO_TOPICS, "k": 4, "diversify": True},
        {"query": TWO_TOPICS, "k": 4},
    ]
    r = post(base_url, "/v1/search/batch", {"searches": searches})
    assert r.status_code == 200, r.text
    on, off = r.json()["results"]
    assert len({h["doc_id"] for h in on["hits"]}) == 4 and "mixture" in on
    assert all("interest" in h for h in on["hits"])
    assert "mixture" not in off and all("interest" not in h for h in off["hits"])


def test_diversify_without_interests_says_how_to_rebuild(base_url: str) -> None:
    body = {"query": "heat transfer", "collection": "plain", "diversify": True}
    r = post(base_url, "/v1/search", body)
    assert r.status_code == 404, r.text  # the collection's interests index is not there
    err = r.json()
    assert err["code"] == "not_found"
    assert "'plain'" in err["detail"] and "--retrievers dense,interests" in err["detail"]
    # the same collection searches as before without diversify
    assert post(base_url, "/v1/search", {**body, "diversify": False}).status_code == 200


@pytest.mark.parametrize("value", ["true", 1, None, [True]])
def test_diversify_must_be_a_boolean(base_url: str, value: object) -> None:
    r = post(base_url, "/v1/search", {"query": TWO_TOPICS, "diversify": value})
    assert r.status_code == 422, r.text
    assert "diversify" in r.json()["detail"]


def test_a_diversified_page_is_a_slice_of_the_spread_up_to_its_end(base_url: str) -> None:
    """With ``offset``, the first offset + k hits are spread over the interests and the
    page is the tail of that list (the spread depends on how many hits it fills)."""
    body: dict[str, object] = {"query": TWO_TOPICS, "pipeline": "hybrid", "diversify": True}
    whole = post(base_url, "/v1/search", {**body, "k": 8}).json()
    page = post(base_url, "/v1/search", {**body, "k": 4, "offset": 4}).json()
    assert page["offset"] == 4 and [h["rank"] for h in page["hits"]] == [5, 6, 7, 8]
    assert page["hits"] == whole["hits"][4:]
    assert page["mixture"] == whole["mixture"]
