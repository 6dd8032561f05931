"""Snippets with highlighted query terms, for the search page and API hits.

Matching is by a light stem (lower case, a few English suffixes cut) so "layers"
highlights "layer"; stopwords never highlight. Spans are character offsets into the
returned snippet, so a client can mark them without parsing HTML.
"""

from __future__ import annotations

import re
from functools import lru_cache

WORD = re.compile(r"\w+", re.UNICODE)
_STOP = (
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "by",
    "can",
    "do",
    "does",
    "for",
    "from",
    "has",
    "have",
    "how",
    "in",
    "is",
    "it",
    "its",
    "of",
    "on",
    "or",
    "that",
    "the",
    "this",
    "to",
    "was",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "why",
    "with",
)
STOPWORDS = frozenset(_STOP)
SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "es", "ed", "s", "ly")


def stem(word: str) -> str:
    w = word.lower()
    for suffix in SUFFIXES:
        if len(w) - len(suffix) >= 3 and w.endswith(suffix):
            return w[: -len(suffix)]
    return w


def query_stems(query: str) -> frozenset[str]:
    return frozenset(stem(w) for w in WORD.findall(query) if w.lower() not in STOPWORDS)


@lru_cache(maxsize=1 << 17)
def _word_stem(word: str) -> str | None:
    """``stem(word)``, or None for a stopword; cached, since words repeat across texts."""
    return None if word.lower() in STOPWORDS else stem(word)


def highlight_spans(text: str, stems: frozenset[str]) -> list[tuple[int, int]]:
    if not stems:
        return []
    return [(m.start(), m.end()) for m in WORD.finditer(text) if _word_stem(m.group()) in stems]


def snippet(
    text: str, stems: frozenset[str], max_chars: int = 280
) -> tuple[str, list[tuple[int, int]]]:
    """The ``max_chars`` window of ``text`` with the most matches, cut at word bounds,
    with "…" where text was cut; and the match spans inside it."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text, highlight_spans(text, stems)
    spans = highlight_spans(text, stems)
    start = 0
    if spans:
        best = max(
            range(len(spans)),
            key=lambda i: (
                sum(1 for s, _ in spans if spans[i][0] <= s < spans[i][0] + max_chars),
                -i,
            ),
        )
        start = max(0, spans[best][0] - max_chars // 6)
    end = min(len(text), start + max_chars)
    start = max(0, end - max_chars)
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + max_chars // 2 else end
    prefix = "… " if start > 0 else ""
    suffix = " …" if end < len(text) else ""
    window = prefix + text[start:end] + suffix
    shift = len(prefix) - start  # spans are word bounds, so a cut never splits one
    inside = [(s + shift, e + shift) for s, e in spans if s >= start and e <= end]
    return window, inside
