"""Sub-index ``sparse``: inference-free learned sparse (MLM doc encoder, idf query side).

See ``sparse.build`` (building) and ``sparse.index`` (format and engines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twofold.indexing.buildctx import BuildContext
from twofold.indexing.sparse.build import build_sparse
from twofold.indexing.sparse.index import SparseIndex


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    return build_sparse(ctx, out, "sparse")


def open_index(path: Path, entry: dict[str, Any]) -> SparseIndex:
    return SparseIndex(path, entry)
