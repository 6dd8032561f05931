"""Manifest round trip and refusal of an unknown format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twofold.core.errors import CollectionError, FormatVersionError
from twofold.indexing.manifest import Manifest, read_manifest, write_manifest


def sample() -> Manifest:
    return Manifest(
        doc_count=3,
        sub_indexes={"bm25": {"k1": 0.9, "b": 0.4}},
        corpus={"path": "c.jsonl", "skipped": 0},
        build={"device": "cpu"},
        pipelines={"hybrid": {"weights": {"bm25": 1.0}}},
    )


def test_round_trip(tmp_path: Path) -> None:
    write_manifest(tmp_path, sample())
    assert read_manifest(tmp_path) == sample()
    assert not (tmp_path / "manifest.json.tmp").exists()


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    obj = json.loads(sample().to_json())
    obj["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(obj))
    with pytest.raises(FormatVersionError, match="format_version 99 is not supported"):
        read_manifest(tmp_path)


def test_wrong_kind_and_garbage(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "other", "format_version": 1}))
    with pytest.raises(CollectionError, match="kind is 'other'"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(CollectionError, match="not valid JSON"):
        read_manifest(tmp_path)
    obj = json.loads(sample().to_json())
    del obj["doc_count"]
    (tmp_path / "manifest.json").write_text(json.dumps(obj))
    with pytest.raises(CollectionError, match="malformed"):
        read_manifest(tmp_path)


def test_missing_manifest_says_build_did_not_finish(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="did not finish"):
        read_manifest(tmp_path)
