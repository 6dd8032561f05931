"""``twofold tune-fusion``: the weight grid and what it refuses."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from twofold.app.cli import main
from twofold.core.errors import InputError
from twofold.indexing.build import BuildLocked, build_collection, build_lock
from twofold.indexing.buildctx import BuildOptions
from twofold.search.tune import MAX_GRID, TuneJob, grid_step, simplex_grid, tune_fusion

ROOT = Path(__file__).resolve().parent.parent


def test_simplex_grid_by_hand() -> None:
    assert simplex_grid(2, 0.5) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    grid = simplex_grid(3, 0.25)
    assert len(grid) == math.comb(4 + 2, 2) == 15
    assert all(math.isclose(sum(w), 1.0) and min(w) >= 0 for w in grid)
    assert len(set(grid)) == len(grid)
    with pytest.raises(InputError, match="divide 1"):
        simplex_grid(2, 0.3)


@pytest.mark.parametrize(("n", "expected"), [(2, 0.1), (3, 0.1), (4, 0.2), (5, 0.25)])
def test_grid_is_coarsened_for_many_retrievers(n: int, expected: float) -> None:
    step = grid_step(n, 0.1)
    assert step == expected
    assert len(simplex_grid(n, step)) <= MAX_GRID


def test_one_retriever_has_nothing_to_tune(tmp_path: Path) -> None:
    out = tmp_path / "c"
    build_collection(ROOT / "data" / "cranfield", out, BuildOptions(progress=False))
    with pytest.raises(InputError, match="needs two or more"):
        tune_fusion(TuneJob(out, ROOT / "data" / "cranfield", split="test"))
    assert main(["tune-fusion", str(out), "--dataset", str(ROOT / "data" / "cranfield")]) == 2


def test_a_tune_is_refused_while_a_build_holds_the_collection(full_collection: Path) -> None:
    cranfield = ROOT / "data" / "cranfield"
    job = TuneJob(full_collection, cranfield, split="test", max_queries=3)
    manifest = (full_collection / "manifest.json").read_bytes()
    with build_lock(full_collection):  # a rebuild of the collection is running
        with pytest.raises(BuildLocked, match="then run tune-fusion again"):
            tune_fusion(job)
        args = ["tune-fusion", str(full_collection), "--dataset", str(cranfield)]
        assert main([*args, "--split", "test", "--max-queries", "3"]) == 2
        assert (full_collection / "manifest.json").read_bytes() == manifest
        report = tune_fusion(replace(job, write=False))  # a dry run writes nothing: no lock
        assert report["written"] is False
    assert (full_collection / "manifest.json").read_bytes() == manifest


def test_pseudo_queries_are_refused_with_the_measured_reason(
    full_collection: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = (full_collection / "manifest.json").read_bytes()
    assert main(["tune-fusion", str(full_collection), "--queries", "pseudo"]) == 2
    err = capsys.readouterr().err
    assert "does not tune on pseudo-queries" in err and "--dataset D --split S" in err
    assert main(["tune-fusion", str(full_collection)]) == 2
    assert "needs judged queries: --dataset" in capsys.readouterr().err
    assert (full_collection / "manifest.json").read_bytes() == manifest


def test_a_zero_weight_drops_a_retriever_from_the_fusion() -> None:
    from twofold.core.types import Hit, Ranking
    from twofold.search.fusion import FusionConfig

    a = Ranking("q", (Hit("x", 3.0), Hit("y", 1.0)))
    b = Ranking("q", (Hit("y", 9.0), Hit("x", 1.0)))
    for method in ("rrf", "convex"):
        fused = FusionConfig(method, weights={"a": 1.0, "b": 0.0}).fuse("q", {"a": a, "b": b}, 10)
        assert fused.doc_ids() == ["x", "y"], method
