"""``POST /v1/recommend`` and ``twofold recommend`` on a real tiny collection (dense with
the real minilm-l6 encoder + interests), the API through a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TINY_DOCS
from tests.test_api import run_in_thread
from twofold.app.cli import main
from twofold.app.settings import Settings
from twofold.app.state import AppState
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, InterestOptions

ALL_IDS = {d["_id"] for d in TINY_DOCS}


@pytest.fixture(scope="module")
def interests_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("knn")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    out = root / "tiny"
    options = BuildOptions(
        retrievers=("dense", "interests"),
        interests=InterestOptions(n_clusters=2),
        progress=False,
    )
    build_collection(corpus, out, options)
    return out


@pytest.fixture(scope="module")
def served(interests_collection: Path) -> Iterator[tuple[str, AppState]]:
    """The app on 127.0.0.1 in a thread of this process, and its ``AppState``."""
    settings = Settings(collections=[interests_collection], default_pipeline="dense", warmup=False)
    runner = run_in_thread(settings)
    with runner as base:
        yield base, runner.server.config.app.state.twofold


@pytest.fixture(scope="module")
def base_url(served: tuple[str, AppState]) -> str:
    return served[0]


def test_recommend_returns_interests_and_mixture(base_url: str) -> None:
    r = httpx.post(f"{base_url}/v1/recommend", json={"history": ["d1", "d3"], "k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [h["doc_id"] for h in body["hits"]]
    assert len(ids) == len(set(ids)) == 3
    assert set(ids) <= ALL_IDS - {"d1", "d3"}
    assert all(h["interest"] in (0, 1) for h in body["hits"])
    assert sum(c["budget"] for c in body["mixture"]) <= 3
    assert body["method"] == "knn_embed" and body["collection"] == "tiny"


def test_recommend_with_a_text_and_single_vector(base_url: str) -> None:
    payload = {
        "history": [{"text": "heat transfer in a boundary layer"}, {"doc_id": "d2"}],
        "k": 2,
        "method": "single_vector",
    }
    r = httpx.post(f"{base_url}/v1/recommend", json=payload, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mixture"] == [] and "d2" not in [h["doc_id"] for h in body["hits"]]


def test_recommend_fields_leave_out_what_is_not_asked_for(base_url: str) -> None:
    body = {"history": ["d1", "d3"], "k": 3}
    full = httpx.post(f"{base_url}/v1/recommend", json=body, timeout=60).json()
    assert set(full["hits"][0]) == {
        "rank",
        "doc_id",
        "score",
        "interest",
        "filled",
        "title",
        "text",
    }
    lean = httpx.post(
        f"{base_url}/v1/recommend", json={**body, "fields": ["score", "interest"]}, timeout=60
    ).json()
    assert [set(h) for h in lean["hits"]] == [{"rank", "doc_id", "score", "interest"}] * 3
    assert [(h["doc_id"], h["score"]) for h in lean["hits"]] == [
        (h["doc_id"], h["score"]) for h in full["hits"]
    ]  # the same ranking, fewer fields
    bare = httpx.post(f"{base_url}/v1/recommend", json={**body, "fields": []}, timeout=60).json()
    assert [set(h) for h in bare["hits"]] == [{"rank", "doc_id"}] * 3
    bad = httpx.post(f"{base_url}/v1/recommend", json={**body, "fields": ["snippet"]}, timeout=60)
    assert bad.status_code == 422 and "body.fields.0" in bad.text
    paged = httpx.post(f"{base_url}/v1/recommend", json={**body, "offset": 3}, timeout=60)
    assert paged.status_code == 422 and "offset" in paged.text  # no pages: see the schema


def test_unknown_history_ids_are_a_404_naming_them(base_url: str) -> None:
    r = httpx.post(
        f"{base_url}/v1/recommend", json={"history": ["d1", "nope-7", "zzz"], "k": 3}, timeout=60
    )
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "'nope-7'" in detail and "'zzz'" in detail and "'d1'" not in detail


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"history": [], "k": 3}, "history"),
        ({"history": ["d1"], "k": 0}, "k"),
        ({"history": [{"doc_id": "d1", "text": "x"}]}, "history.0"),
        ({"history": [{}]}, "history.0"),
        ({"history": ["d1"], "mixture": {"temperature": -1}}, "temperature"),
        ({"history": ["d1"], "histroy": ["d2"]}, "histroy"),
    ],
)
def test_bad_requests_say_what_to_change(base_url: str, payload: dict, field: str) -> None:
    r = httpx.post(f"{base_url}/v1/recommend", json=payload, timeout=60)
    assert r.status_code == 422
    assert field in r.json()["detail"]


def test_cli_recommend(interests_collection: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["recommend", str(interests_collection), "--history", "d1,d4", "--k", "2", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    ids = [h["doc_id"] for h in out["hits"]]
    assert len(ids) == 2 and not {"d1", "d4"} & set(ids)
    assert main(["recommend", str(interests_collection), "--history", "missing-id"]) == 2
    assert "'missing-id'" in capsys.readouterr().err


def test_recommend_text_cap_over_http(base_url: str) -> None:
    """The free-text cap (``MAX_HISTORY_TEXT_CHARS``) through the route: at it 200,
    one character over it 422 with a message that says what to change."""
    from twofold.app.routes_recommend import MAX_HISTORY_TEXT_CHARS

    per = MAX_HISTORY_TEXT_CHARS // 8
    at_cap = [{"text": "heat " * (per // 5)}] * 8
    r = httpx.post(f"{base_url}/v1/recommend", json={"history": at_cap, "k": 2}, timeout=120)
    assert r.status_code == 200, r.text
    over = [*at_cap, {"text": "x"}]
    r = httpx.post(f"{base_url}/v1/recommend", json={"history": over, "k": 2}, timeout=120)
    assert r.status_code == 422, r.text
    assert "send doc ids, or fewer or shorter texts" in r.text


def test_recommend_limits_history_text_by_its_tokens(base_url: str) -> None:
    """``MAX_HISTORY_TEXT_TOKENS``: CJK text is a token a character, so nine texts of 250
    characters are well inside the character cap but over the token cap: 400, saying
    what to change; eight fit (each 250 + 2 special tokens, under the 256 truncation)."""
    from twofold.app.routes_recommend import MAX_HISTORY_TEXT_CHARS, MAX_HISTORY_TEXT_TOKENS

    text = {"text": "中" * 250}
    assert MAX_HISTORY_TEXT_CHARS > 9 * 250 and 8 * 252 <= MAX_HISTORY_TEXT_TOKENS < 9 * 252
    url = f"{base_url}/v1/recommend"
    r = httpx.post(url, json={"history": [text] * 8, "k": 2}, timeout=120)
    assert r.status_code == 200, r.text
    r = httpx.post(url, json={"history": [text] * 9, "k": 2}, timeout=120)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == (
        f"the history's texts take {9 * 252} tokens to encode; at most "
        f"{MAX_HISTORY_TEXT_TOKENS} are encoded per request (send doc ids, or fewer or "
        "shorter texts)"
    )


class CountingTokenizer:
    """A real tokenizer that records the texts of every tokenizing call; everything else
    (``pad``, attributes) goes straight to it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str | list[str], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.texts.extend([text] if isinstance(text, str) else text)
        return self.real(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_recommend_tokenizes_each_history_text_once(
    served: tuple[str, AppState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request with free-text history: its token cap is checked and its texts are
    encoded from one tokenization (the real minilm-l6 tokenizer, its calls counted)."""
    base, state = served
    retriever = state.collection("tiny").interests
    assert retriever is not None and retriever.encoder is not None
    encoder = retriever.encoder.encoder  # the dense index's DenseEncoder (loaded here)
    counting = CountingTokenizer(encoder.tokenizer)
    monkeypatch.setattr(encoder, "tokenizer", counting)
    texts = ["heat transfer in a boundary layer", "buckling of thin cylindrical shells"]
    payload = {"history": [{"text": t} for t in texts] + ["d2"], "k": 3}
    r = httpx.post(f"{base}/v1/recommend", json=payload, timeout=60)
    assert r.status_code == 200, r.text
    assert "d2" not in [h["doc_id"] for h in r.json()["hits"]]
    assert Counter(counting.texts) == Counter(encoder.doc_prefix + t for t in texts)
