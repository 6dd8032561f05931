"""Streaming readers for corpora (BEIR jsonl, jsonl, tsv), BEIR queries and qrels.

Readers yield one item at a time and hold only the set of ids seen (for duplicate
detection), so memory does not grow with document text. Every bad line raises a
``CorpusError`` naming the file and 1-based line, unless ``skip_invalid`` is set, in
which case it is counted in the ``ReadReport``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twofold.core.errors import CorpusError, InputError
from twofold.core.types import Doc, Qrels, Query

FORMATS = ("auto", "beir", "jsonl", "tsv")
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")
MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class CorpusFormat:
    """How to read a corpus file. ``beir`` is jsonl with ``_id``/``title``/``text``."""

    format: str = "auto"
    id_field: str = "_id"
    title_field: str = "title"
    text_field: str = "text"
    tsv_header: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown corpus format {self.format!r}; known: {', '.join(FORMATS)}")


@dataclass
class ReadReport:
    """What a read saw: documents read, lines skipped and why (first few reasons)."""

    read: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, error: CorpusError) -> None:
        self.skipped += 1
        if len(self.reasons) < 20:
            self.reasons.append(str(error))


def resolve_corpus_path(path: Path) -> Path:
    """A BEIR dataset directory means its ``corpus.jsonl``; a file means itself."""
    if path.is_dir():
        candidate = path / "corpus.jsonl"
        if not candidate.is_file():
            raise InputError(f"{path} is a directory without corpus.jsonl (BEIR layout expected)")
        return candidate
    if not path.is_file():
        raise InputError(f"corpus {path} does not exist")
    return path


def _detect(path: Path, fmt: CorpusFormat) -> str:
    if fmt.format != "auto":
        return fmt.format
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise InputError(
        f"cannot tell the format of {path} from its suffix; pass --format beir|jsonl|tsv"
    )


def check_id(value: Any, path: str, line: int, what: str = "id") -> str:
    """A usable id: a non-empty string (or int) without whitespace or control characters."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CorpusError(path, line, f"{what} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise CorpusError(path, line, f"empty {what}")
    if len(text) > MAX_ID_LENGTH:
        raise CorpusError(path, line, f"{what} longer than {MAX_ID_LENGTH} characters")
    if _BAD_ID.search(text):
        raise CorpusError(path, line, f"{what} {text!r} contains whitespace or control characters")
    return text


def _text_field(obj: dict[str, Any], name: str, path: str, line: int, required: bool) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise CorpusError(path, line, f"missing field {name!r}")
        return ""
    if not isinstance(value, str):
        raise CorpusError(
            path, line, f"field {name!r} must be a string, got {type(value).__name__}"
        )
    return value


def _parse_json_line(raw: str, path: str, line: int) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CorpusError(path, line, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise CorpusError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _parse_jsonl(raw: str, fmt: CorpusFormat, name: str, line_no: int) -> Doc:
    obj = _parse_json_line(raw, name, line_no)
    if fmt.id_field not in obj:
        raise CorpusError(name, line_no, f"missing id field {fmt.id_field!r}")
    doc_id = check_id(obj[fmt.id_field], name, line_no)
    title = _text_field(obj, fmt.title_field, name, line_no, required=False)
    text = _text_field(obj, fmt.text_field, name, line_no, required=True)
    used = {fmt.id_field, fmt.title_field, fmt.text_field}
    extra = {k: v for k, v in obj.items() if k not in used}
    meta = extra.pop("metadata", {})
    if not isinstance(meta, dict):
        meta = {"metadata": meta}
    meta.update(extra)
    return Doc(doc_id, title, text, meta)


def _parse_tsv(raw: str, name: str, line_no: int) -> Doc:
    row = raw.rstrip("\r\n").split("\t")
    if len(row) == 2:
        doc_id, title, text = row[0], "", row[1]
    elif len(row) == 3:
        doc_id, title, text = row
    else:
        raise CorpusError(
            name,
            line_no,
            f"expected 2 (id, text) or 3 (id, title, text) tab-separated columns, got {len(row)}",
        )
    return Doc(check_id(doc_id, name, line_no), title, text)


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank raw lines with 1-based numbers."""
    with path.open("rb") as fh:
        for line_no, data in enumerate(fh, start=1):
            if data.strip():
                yield line_no, data


def _decode(data: bytes, name: str, line_no: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(name, line_no, f"not UTF-8 text: {exc.reason}") from None


def read_corpus(
    path: Path,
    fmt: CorpusFormat | None = None,
    *,
    skip_invalid: bool = False,
    report: ReadReport | None = None,
    max_docs: int | None = None,
) -> Iterator[Doc]:
    """Stream the documents of ``path`` (a file or a BEIR dataset dir) in file order."""
    fmt = fmt or CorpusFormat()
    path = resolve_corpus_path(path)
    report = report if report is not None else ReadReport()
    kind = _detect(path, fmt)
    name = str(path)
    seen: set[str] = set()
    for line_no, data in _raw_lines(path):
        if max_docs is not None and report.read >= max_docs:
            return
        if kind == "tsv" and fmt.tsv_header and line_no == 1:
            continue
        try:
            raw = _decode(data, name, line_no)
            if kind == "tsv":
                doc = _parse_tsv(raw, name, line_no)
            else:
                doc = _parse_jsonl(raw, fmt, name, line_no)
            if doc.doc_id in seen:
                raise CorpusError(name, line_no, f"duplicate id {doc.doc_id!r}")
        except CorpusError as exc:
            if not skip_invalid:
                raise
            report.skip(exc)
            continue
        seen.add(doc.doc_id)
        report.read += 1
        yield doc


def read_queries(path: Path) -> list[Query]:
    """BEIR ``queries.jsonl`` (``_id``, ``text``)."""
    name = str(path)
    if not path.is_file():
        raise InputError(f"queries file {path} does not exist")
    queries: list[Query] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            obj = _parse_json_line(raw, name, line_no)
            if "_id" not in obj:
                raise CorpusError(name, line_no, "missing id field '_id'")
            query_id = check_id(obj["_id"], name, line_no, "query id")
            if query_id in seen:
                raise CorpusError(name, line_no, f"duplicate query id {query_id!r}")
            seen.add(query_id)
            queries.append(Query(query_id, _text_field(obj, "text", name, line_no, True)))
    return queries


def read_qrels(path: Path) -> Qrels:
    """BEIR ``qrels/<split>.tsv`` with header ``query-id corpus-id score``."""
    name = str(path)
    if not path.is_file():
        raise InputError(f"qrels file {path} does not exist")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for line_no, row in enumerate(reader, start=1):
            if not row:
                continue
            if line_no == 1 and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise CorpusError(name, line_no, f"expected 3 columns, got {len(row)}")
            try:
                grade = int(row[2])
            except ValueError:
                raise CorpusError(name, line_no, f"score {row[2]!r} is not an integer") from None
            query_id = check_id(row[0], name, line_no, "query id")
            qrels.setdefault(query_id, {})[check_id(row[1], name, line_no, "doc id")] = grade
    return qrels


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset directory: corpus, queries and per-split qrels."""

    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.jsonl"

    def queries(self, split: str, qrels: Qrels | None = None) -> list[Query]:
        """The queries judged in ``split`` (file order)."""
        judged = qrels if qrels is not None else self.qrels(split)
        return [q for q in read_queries(self.root / "queries.jsonl") if q.query_id in judged]

    def qrels(self, split: str) -> Qrels:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            splits = sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))
            raise InputError(f"no split {split!r} in {self.root}; available: {', '.join(splits)}")
        return read_qrels(path)
