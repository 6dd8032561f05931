"""Snippets and highlight spans of API hits (pure functions)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.app.snippets import (
    STOPWORDS,
    densest_start,
    highlight_spans,
    query_stems,
    snippet,
    stem,
)

WORDS = ["heat", "transfer", "boundary", "layers", "flow", "the", "of", "wings", "lift"]


def test_highlights_by_hand() -> None:
    stems = query_stems("Boundary layers and heat-transfer")
    text = "heat transfer in boundary layers; heats, Boundary-layer transfers. the heated"
    marked = [text[s:e] for s, e in highlight_spans(text, stems)]
    assert marked == [
        "heat",
        "transfer",
        "boundary",
        "layers",
        "heats",
        "Boundary",
        "layer",
        "transfers",
        "heated",
    ]
    assert highlight_spans("the and of", query_stems("the and of")) == []


def test_snippet_centres_on_the_matches() -> None:
    text = "x " * 300 + "boundary layer heat " + "y " * 300
    window, spans = snippet(text, query_stems("boundary layer heat"), 120)
    assert window.startswith("… ") and window.endswith(" …") and len(window) <= 124
    assert [window[s:e] for s, e in spans] == ["boundary", "layer", "heat"]


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=200),
    query=st.sampled_from(["heat transfer", "boundary layers", "wing lift", "the"]),
    width=st.integers(40, 400),
)
def test_snippet_spans_are_the_matches_inside_the_window(
    words: list[str], query: str, width: int
) -> None:
    stems = query_stems(query)
    window, spans = snippet(" ".join(words), stems, width)
    assert spans == highlight_spans(window, stems)
    assert len(window) <= width + 4


def densest_by_counting(starts: list[int], width: int) -> int:
    """The reference: count every window afresh (O(m^2)), first on ties."""
    counts = [sum(1 for s in starts if t <= s < t + width) for t in starts]
    return counts.index(max(counts))


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 60), min_size=1, max_size=80),
    width=st.integers(1, 300),
)
def test_densest_start_is_the_counted_one(gaps: list[int], width: int) -> None:
    starts = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    assert densest_start(starts, width) == densest_by_counting(starts, width)


def test_a_very_long_document() -> None:
    """500,000 words and 3.2 million characters, 106,000 of them matches: the snippet is
    still one window of the densest stretch (counting every window afresh would take
    about 1e10 steps)."""
    stems = query_stems("heat transfer")
    sparse = " ".join("heat" if i % 50 == 0 else "x" for i in range(150_000))
    dense = " ".join(["boundary heat transfer plate"] * 30)  # 2 matches in every 4 words
    everywhere = " ".join(["heat " + "y" * 20] * 100_000)  # a match every 26 characters
    text = f"{sparse} {dense} {sparse} {everywhere}"
    window, spans = snippet(text, stems, 200)
    assert window.startswith("… ") and window.endswith(" …") and len(window) <= 204
    assert "boundary heat transfer plate" in window
    assert spans == highlight_spans(window, stems)
    assert len(spans) >= 2 * (200 // len("boundary heat transfer plate ")) - 2
    # matches everywhere: every window holds as many, and the first one wins
    window, spans = snippet(everywhere, stems, 200)
    assert window.startswith("heat yyy") and window.endswith(" …")
    assert spans == highlight_spans(window, stems) and len(spans) >= 7
    # one 2-million-character word: no match, no space to cut at
    window, spans = snippet("a" * 2_000_000, stems, 100)
    assert window == "a" * 100 + " …" and spans == []


def highlight_by_stemming_every_word(text: str, stems: frozenset[str]) -> list[tuple[int, int]]:
    """The reference: every word of the text stemmed, in Python."""
    return [
        (m.start(), m.end())
        for m in re.finditer(r"\w+", text)
        if m.group().lower() not in STOPWORDS and stem(m.group()) in stems
    ]


# words that stem alike or nearly, in odd cases and scripts: the Kelvin sign K, the long
# s, dotted I, sharp s, a stopword and its suffixed form
PIECES = ["heat", "HEATS", "Heating", "heatly", "heaters", "heat_", "kelvin", "\u212aelvin"]
PIECES += ["la\u017fers", "layer", "LAYERED", "\u0130stanbul", "istanbul", "stra\u00dfe", "the"]
PIECES += ["theses", "is", "isly", "mu\u00b5", "x", " ", "-", "\u00e9t\u00e9s", "\u00c9T\u00c9"]


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(PIECES), max_size=40),
    query=st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
)
def test_highlights_are_those_of_stemming_every_word(pieces: list[str], query: list[str]) -> None:
    text = "".join(pieces)
    stems = query_stems(" ".join(query))
    assert highlight_spans(text, stems) == highlight_by_stemming_every_word(text, stems)
