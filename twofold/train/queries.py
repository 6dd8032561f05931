"""Training queries from three sources (``--queries``):

- ``split``: the judged queries of a BEIR split; positives are its relevant documents.
- ``pseudo``: queries made from the corpus with no labels and no generator model, by the
  inverse cloze task (Lee et al. 2019, "Latent Retrieval for Weakly Supervised Open Domain
  QA", ICT): one sentence is taken out of a document and becomes the query; the document is
  its known positive, and what teacher and student see of that document is its text
  *without* the sentence (:attr:`TrainQuery.hidden`), so matching the copied words cannot
  be learned.
- a file: one user query per line (plain text) or ``{"_id", "text"}`` JSON lines, with no
  labels: the teacher alone says what is relevant.

Pseudo-query rules (``PseudoConfig``): the sentence has ``min_words..max_words`` words and
is not the only sentence of the document (the positive must keep some text); documents
are drawn with a seeded RNG, one query per document.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twofold.core.errors import InputError
from twofold.core.types import Doc, Query
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset

SOURCES = ("split", "pseudo", "file")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class TrainQuery:
    """A training query. ``positives``: doc id -> grade, known positives (labels, or the
    pseudo-query's source document), empty for unlabelled queries; ``hidden``: doc id ->
    the text taken out of that document to make the query (removed from what every model
    reads of it)."""

    query: Query
    positives: Mapping[str, int] = field(default_factory=dict)
    hidden: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudoConfig:
    """``count``: pseudo-queries to make (one per sampled document); ``min_words`` /
    ``max_words``: length of the sentence taken out; ``seed``: document sampling."""

    count: int = 800
    min_words: int = 6
    max_words: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.min_words <= self.max_words:
            raise InputError("pseudo-queries: count >= 1 and 1 <= min_words <= max_words")


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (after ``.!?`` and white space; lower-case text such as
    Cranfield's has no capitals to look for)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def remove_sentence(text: str, sentence: str) -> str:
    """``text`` with the first occurrence of ``sentence`` cut out (spaces tidied)."""
    i = text.find(sentence)
    if i < 0:
        return text
    return re.sub(r"\s{2,}", " ", (text[:i] + text[i + len(sentence) :]).strip())


def inverse_cloze(doc: Doc, rng: random.Random, config: PseudoConfig) -> TrainQuery | None:
    """One ICT pseudo-query from ``doc``: a random sentence of the allowed length, taken
    out of a document that has at least one other sentence; None when there is none."""
    parts = sentences(doc.text)
    if len(parts) < 2:
        return None
    fitting = [s for s in parts if config.min_words <= len(s.split()) <= config.max_words]
    if not fitting:
        return None
    sentence = rng.choice(fitting)
    query = Query(f"pseudo-{doc.doc_id}", sentence)
    return TrainQuery(query, {doc.doc_id: 1}, {doc.doc_id: sentence})


def pseudo_queries(collection: Collection, config: PseudoConfig) -> list[TrainQuery]:
    """``config.count`` ICT pseudo-queries over documents sampled without replacement."""
    ids = list(collection.docs.ids)
    rng = random.Random(config.seed)
    rng.shuffle(ids)
    out: list[TrainQuery] = []
    for doc_id in ids:
        made = inverse_cloze(collection.docs.get(doc_id), rng, config)
        if made is not None:
            out.append(made)
            if len(out) >= config.count:
                break
    if not out:
        raise InputError(
            f"no pseudo-query could be made from {collection.name!r}: no document has two "
            f"sentences with one of {config.min_words}-{config.max_words} words"
        )
    return out


def split_queries(dataset: BeirDataset, split: str) -> list[TrainQuery]:
    """The judged queries of ``split`` with their relevant documents (grade >= 1)."""
    if split == "test":
        raise InputError(
            "refusing to train on the test split: pick a training split (e.g. --split train) "
            "or label-free queries (--queries pseudo)"
        )
    qrels = dataset.qrels(split)
    out = []
    for q in dataset.queries(split, qrels):
        positives = {d: g for d, g in qrels[q.query_id].items() if g >= 1}
        if positives:
            out.append(TrainQuery(q, positives))
    return out


def file_queries(path: Path) -> list[TrainQuery]:
    """Unlabelled queries: one per line, plain text or JSON ``{"_id", "text"}``."""
    if not path.is_file():
        raise InputError(f"--queries {path}: no such file (or use split / pseudo)")
    out: list[TrainQuery] = []
    seen: set[str] = set()
    for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                query_id, text = str(obj["_id"]), str(obj["text"])
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path}:{line_no}: expected JSON with _id and text") from None
        else:
            query_id, text = f"q{line_no}", line
        if not text.strip() or len(text) > MAX_QUERY_CHARS:
            raise InputError(f"{path}:{line_no}: a query needs 1-{MAX_QUERY_CHARS} characters")
        if query_id in seen:
            raise InputError(f"{path}:{line_no}: duplicate query id {query_id!r}")
        seen.add(query_id)
        out.append(TrainQuery(Query(query_id, text)))
    if not out:
        raise InputError(f"--queries {path} holds no query")
    return out


def load_queries(
    source: str,
    collection: Collection,
    dataset: Path | None = None,
    split: str = "train",
    pseudo: PseudoConfig | None = None,
) -> list[TrainQuery]:
    """Training queries from ``source``: ``split`` (needs ``dataset``), ``pseudo``,
    ``split+pseudo`` (both: labels plus inverse-cloze queries for more matching data), or a
    path to a file of queries."""
    if source in ("split", "split+pseudo"):
        if dataset is None:
            raise InputError(f"--queries {source} needs --dataset DIR (a BEIR dataset)")
        labelled = split_queries(BeirDataset(dataset), split)
        if source == "split":
            return labelled
        return labelled + pseudo_queries(collection, pseudo or PseudoConfig())
    if source == "pseudo":
        return pseudo_queries(collection, pseudo or PseudoConfig())
    return file_queries(Path(source))


def shown_text(doc: Doc, hidden: Mapping[str, str]) -> str:
    """What a model may read of ``doc`` for a query: title + text, minus the text the
    query was made from (``hidden``)."""
    removed = hidden.get(doc.doc_id)
    text = remove_sentence(doc.text, removed) if removed else doc.text
    return f"{doc.title}\n{text}" if doc.title else text


def holdout_split(
    queries: Sequence[TrainQuery], fraction: float, seed: int
) -> tuple[list[TrainQuery], list[TrainQuery]]:
    """(train, held-out) with about ``fraction`` of the queries held out, such that no
    held-out query shares a positive with a training query (the held-out queries then
    measure matching, not memorized documents, as the unseen-document test queries do).
    Unlabelled queries are split at random. In a mix of real and pseudo-queries
    (``split+pseudo``) only real ones are held out: they are the ones served."""
    if not 0 < fraction < 1:
        raise InputError("the held-out fraction must be in (0, 1)")
    order = list(queries)
    random.Random(seed).shuffle(order)
    real = [tq for tq in order if not tq.hidden]
    pool = real if real and len(real) < len(order) else order
    target = max(1, round(len(pool) * fraction))
    held = pool[:target]
    held_ids = {id(tq) for tq in held}
    held_docs = {d for tq in held for d in tq.positives}
    train = [tq for tq in order if id(tq) not in held_ids]
    # Training queries that share a positive with a held-out one would leak it: drop them.
    kept = [tq for tq in train if not held_docs.intersection(tq.positives)]
    return kept, held
