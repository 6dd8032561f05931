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
    """[start, end) of each word of ``text`` whose stem is one of ``stems`` (not a
    stopword).

    A word stems to ``s`` only if its lower-cased form starts with ``s`` (``stem`` cuts
    a suffix), so ``str.find`` of each stem in the lower-cased text (C speed) gives
    every candidate; Python code runs per candidate, not per word. Where lower-casing
    changes the length (e.g. a dotted capital I), offsets would shift: there every
    word is stemmed."""
    if not stems:
        return []
    low = text.lower()
    if len(low) != len(text):  # no character lower-cases to nothing: equal means 1:1
        return [(m.start(), m.end()) for m in WORD.finditer(text) if _word_stem(m.group()) in stems]
    starts = set()
    for s in stems:
        i = low.find(s)
        while i >= 0:
            before = text[i - 1] if i else " "
            if not (before.isalnum() or before == "_"):  # re's \w: a word starts here
                starts.add(i)
            i = low.find(s, i + 1)
    spans = []
    for i in sorted(starts):
        word = WORD.match(text, i)
        if word is not None and _word_stem(word.group()) in stems:
            spans.append((i, word.end()))
    return spans


def densest_start(starts: list[int], width: int) -> int:
    """The index ``i`` whose window ``[starts[i], starts[i] + width)`` holds the most
    ``starts`` (the first such ``i`` on ties); ``starts`` ascending and non-empty.

    Two pointers: the window's end index only moves forward, so this is O(m) for m
    starts (not O(m^2), counting each window afresh)."""
    best, best_count, j = 0, 0, 0
    for i, start in enumerate(starts):
        j = max(j, i)
        while j < len(starts) and starts[j] < start + width:
            j += 1
        if j - i > best_count:
            best, best_count = i, j - i
    return best


def snippet(
    text: str, stems: frozenset[str], max_chars: int = 280
) -> tuple[str, list[tuple[int, int]]]:
    """The ``max_chars`` window of ``text`` with the most matches, cut at word bounds,
    with "…" where text was cut; and the match spans inside it.

    O(n) in the text's length n: one pass to fold whitespace, one regex pass for the
    matches, ``densest_start`` over them, and searches for a space bounded by the
    window. (``highlight_spans`` finds each stem in the text: O(n) times the query's
    stems, with ``str.find``.)"""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text, highlight_spans(text, stems)
    spans = highlight_spans(text, stems)
    start = 0
    if spans:
        best = densest_start([s for s, _ in spans], max_chars)
        start = max(0, spans[best][0] - max_chars // 6)
    end = min(len(text), start + max_chars)
    start = max(0, end - max_chars)
    if start > 0:
        space = text.find(" ", start, start + 30)
        start = space + 1 if space >= 0 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + max_chars // 2 else end
    prefix = "… " if start > 0 else ""
    suffix = " …" if end < len(text) else ""
    window = prefix + text[start:end] + suffix
    shift = len(prefix) - start  # spans are word bounds, so a cut never splits one
    inside = [(s + shift, e + shift) for s, e in spans if s >= start and e <= end]
    return window, inside
