"""Checks of a build's options against the models and the corpus, before any encoding.

``check_options`` runs before the build writes anything: each model name of a wanted
sub-index resolves (a registry name or a model directory), and what the dense model's
dimension decides (PQ ``m`` must divide it) holds, the dimension read from the model's
``config.json``; ``--executor ray`` finds Ray Data installed. ``check_doc_count`` runs
right after the doc store is written, before any sub-index is built: the cluster count,
the IVF-PQ cells and codebooks and the sparse default engine against the number of
documents. Every message names the CLI flag.
Builders check again where they use a value, for callers that skip these.
"""

from __future__ import annotations

import json
from pathlib import Path

from twofold.core.errors import InputError, ModelError, UnknownNameError
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.sparse.index import default_engine

MODEL_FLAGS = {"sparse": "--sparse-model", "splade": "--splade-model", "dense": "--dense-model"}


def _model_dir(model: str, flag: str) -> Path | None:
    """The directory ``model`` names (``None``: a hub id, read only by transformers)."""
    from twofold.models.registry import resolve

    try:
        where = resolve(model)
    except UnknownNameError as exc:
        raise InputError(
            f"{flag} {model!r} is neither a registered model ({', '.join(exc.known)}) nor "
            "an existing model directory"
        ) from None
    except ModelError as exc:
        raise ModelError(f"{flag}: {exc}") from None
    if not isinstance(where, Path):
        return None
    if not (where / "config.json").is_file():
        raise InputError(f"{flag} {model!r}: {where} holds no config.json (not a model directory)")
    return where


def dense_dim(where: Path | None) -> int | None:
    """The dense encoder's dimension, ``hidden_size`` of its ``config.json`` (what
    ``DenseEncoder.dim`` is); ``None`` when unknown before loading the model."""
    if where is None:
        return None
    try:
        size = json.loads((where / "config.json").read_text()).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return int(size) if isinstance(size, int) and size > 0 else None


def check_options(options: BuildOptions, names: list[str]) -> None:
    """What can be checked before anything is written; raises ``InputError`` (and
    ``DependencyError`` for ``--executor ray`` without Ray Data installed)."""
    if options.executor.kind == "ray":
        from twofold.indexing.ray_executor import check_ray_installed

        check_ray_installed()
    dirs = {
        name: _model_dir(_model(options, name), flag)
        for name, flag in MODEL_FLAGS.items()
        if name in names
    }
    if "dense" in names:
        from twofold.indexing.dense.index import check_pq_m

        dim, m = dense_dim(dirs["dense"]), options.dense.pq_m
        if dim is not None and m is not None and options.dense.index in ("auto", "ivfpq"):
            check_pq_m(m, dim)


def check_doc_count(options: BuildOptions, names: list[str], n: int) -> None:
    """What depends on the number of documents ``n``; raises ``InputError``."""
    from twofold.indexing.dense.index import choose_index_type, index_params

    clusters = options.interests.n_clusters
    if "interests" in names and clusters is not None and clusters > n:
        raise InputError(
            f"--clusters {clusters} is more than the {n} documents; give at most {n}, or "
            "leave --clusters out (round(sqrt(n)) clusters)"
        )
    for name in ("sparse", "splade"):
        o = options.learned_sparse(name)
        if name in names and o.engine is None and default_engine(n) not in o.built_engines:
            raise InputError(
                f"{name}: the default engine for {n} documents is {default_engine(n)}, which "
                "--sparse-engines leaves out; add it there or choose --sparse-engine"
            )
    if "dense" in names:
        kind = choose_index_type(options.dense.index, n)
        dim = dense_dim(_model_dir(options.dense.model, MODEL_FLAGS["dense"]))
        if kind == "ivfpq" and dim is not None:
            index_params(kind, n, dim, options.dense)


def _model(options: BuildOptions, name: str) -> str:
    return options.dense.model if name == "dense" else options.learned_sparse(name).model
