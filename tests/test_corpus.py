"""Corpus, queries and qrels readers: formats, bad lines, duplicates, skip counting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twofold.core.errors import CorpusError, InputError
from twofold.indexing.corpus import (
    BeirDataset,
    CorpusFormat,
    ReadReport,
    read_corpus,
    read_qrels,
    read_queries,
)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_beir_jsonl_reads_title_text_and_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        [
            json.dumps({"_id": "1", "title": "T", "text": "body", "metadata": {"year": 1}}),
            json.dumps({"_id": 2, "text": "no title", "url": "u"}),
        ],
    )
    docs = list(read_corpus(path))
    assert [d.doc_id for d in docs] == ["1", "2"]
    assert docs[0].title == "T" and docs[0].text == "body" and docs[0].metadata == {"year": 1}
    assert docs[1].title == "" and docs[1].metadata == {"url": "u"}


def test_beir_directory_means_its_corpus(tmp_path: Path, tiny_corpus: Path) -> None:
    assert len(list(read_corpus(tiny_corpus.parent))) == 5


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"title": "t", "text": "x"}), "missing id field '_id'"),
        (json.dumps({"_id": "", "text": "x"}), "empty id"),
        (json.dumps({"_id": "a b", "text": "x"}), "whitespace"),
        (json.dumps({"_id": ["a"], "text": "x"}), "id must be a string"),
        (json.dumps({"_id": "a"}), "missing field 'text'"),
        (json.dumps({"_id": "a", "text": 3}), "field 'text' must be a string"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path / "c.jsonl", [json.dumps({"_id": "ok", "text": "fine"}), line])
    with pytest.raises(CorpusError) as info:
        list(read_corpus(path))
    assert info.value.line == 2 and info.value.path == str(path)
    assert reason in str(info.value) and f"{path}:2:" in str(info.value)


def test_duplicate_id_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [json.dumps({"_id": "a", "text": "x"})] * 2)
    with pytest.raises(CorpusError, match="duplicate id 'a'") as info:
        list(read_corpus(path))
    assert info.value.line == 2


def test_skip_invalid_counts_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = [json.dumps({"_id": str(i), "text": f"doc {i}"}) for i in range(3)]
    path.write_bytes(
        (good[0] + "\n{oops\n" + good[1] + "\n").encode()
        + b'{"_id": "x", "text": "\xff"}\n'
        + (good[1] + "\n" + good[2] + "\n").encode()
    )
    report = ReadReport()
    docs = list(read_corpus(path, skip_invalid=True, report=report))
    assert [d.doc_id for d in docs] == ["0", "1", "2"]
    assert report.read == 3 and report.skipped == 3
    assert any("not UTF-8" in r for r in report.reasons)
    assert any("duplicate id '1'" in r for r in report.reasons)


def test_tsv_two_and_three_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", ["a\tjust text", "b\ta title\tand text"])
    docs = list(read_corpus(path))
    assert (docs[0].title, docs[0].text) == ("", "just text")
    assert (docs[1].title, docs[1].text) == ("a title", "and text")


def test_tsv_header_and_bad_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", ["id\ttext", "a\tx", "b"])
    with pytest.raises(CorpusError, match="got 1") as info:
        list(read_corpus(path, CorpusFormat(tsv_header=True)))
    assert info.value.line == 3


def test_plain_jsonl_with_configured_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [json.dumps({"pid": "p1", "body": "hello", "head": "H"})])
    fmt = CorpusFormat("jsonl", id_field="pid", title_field="head", text_field="body")
    (doc,) = read_corpus(path, fmt)
    assert (doc.doc_id, doc.title, doc.text) == ("p1", "H", "hello")


def test_max_docs_stops_early(tiny_corpus: Path) -> None:
    assert len(list(read_corpus(tiny_corpus, max_docs=2))) == 2


def test_unknown_suffix_and_format(tmp_path: Path) -> None:
    path = write(tmp_path / "c.txt", ["x"])
    with pytest.raises(InputError, match="--format"):
        list(read_corpus(path))
    with pytest.raises(InputError, match="unknown corpus format"):
        CorpusFormat("xml")


def test_queries_and_qrels(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    write(
        tmp_path / "queries.jsonl",
        [json.dumps({"_id": "q1", "text": "a"}), json.dumps({"_id": "q2", "text": "b"})],
    )
    write(tmp_path / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "q2\td1\t1", "q2\td2\t0"])
    ds = BeirDataset(tmp_path)
    assert ds.qrels("test") == {"q2": {"d1": 1, "d2": 0}}
    assert [q.query_id for q in ds.queries("test")] == ["q2"]
    with pytest.raises(InputError, match="available: test"):
        ds.qrels("dev")


def test_qrels_bad_score(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", ["query-id\tcorpus-id\tscore", "q\td\thigh"])
    with pytest.raises(CorpusError, match="not an integer"):
        read_qrels(path)


def test_duplicate_query_id(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", [json.dumps({"_id": "q", "text": "a"})] * 2)
    with pytest.raises(CorpusError, match="duplicate query id"):
        read_queries(path)


def test_shared_datasets_have_documented_counts(scifact_dir: Path, cranfield_dir: Path) -> None:
    assert sum(1 for _ in read_corpus(scifact_dir)) == 5183
    assert sum(1 for _ in read_corpus(cranfield_dir)) == 1400
    assert len(BeirDataset(scifact_dir).queries("test")) == 300
    assert len(BeirDataset(cranfield_dir).queries("test")) == 225
