"""Snippets and highlight spans of API hits (pure functions)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.app.snippets import highlight_spans, query_stems, snippet

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
