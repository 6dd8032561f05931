"""Synthetic learned-sparse corpora with a fixed seed (splade-tiny-like shapes).

Documents: about 250 distinct terms each (lognormal length, median 250). Each document
has one of ``TOPICS`` topics (a fixed set of ``TOPIC_TERMS`` term ids drawn Zipfian) and
takes ``TOPIC_SHARE`` of its terms from it, the rest from the background: term ids drawn
Zipfian (exponent ``ZIPF_A``) over the 30,522 BERT WordPiece ids through a fixed random
permutation, so frequent terms are spread over the id range. Topic terms weigh about 2x
the background (learned sparse vectors are topical: their neighbours share heavy terms,
which is what block pruning relies on). Weights: lognormal
(median ``exp(-0.7)`` ~ 0.5, sigma 0.7, clipped to [0.01, 3]) times a rarity factor
``0.5 + 0.5 * log(rank + 2) / log(V)`` (rarer terms weigh more, as with SPLADE's
idf-like activations). Queries: about 20 terms, 14 drawn from one random document
(proportional to its weights) plus 6 Zipfian noise terms, lognormal weights; a query
therefore has a clear top (its source document and its neighbours), as real queries do.

All arrays are CSR (``indptr`` int64, ``indices`` int32 sorted within a row, ``data``
float32). Generation is chunked, so memory is O(chunk) beyond the output.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

VOCAB = 30522
ZIPF_A = 1.0
DOC_TERMS = 250
QUERY_TERMS = 20
QUERY_FROM_DOC = 14
TOPICS = 2000
TOPIC_TERMS = 400
TOPIC_SHARE = 0.6


TABLE_BITS = 22  # inverse-CDF lookup table: 4M bins, finer than the rarest term (3e-6)


def _zipf_table(vocab: int, a: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(term id per inverse-CDF bin, term id of each rank): a draw is
    ``table[randint(2**TABLE_BITS)]``, far faster than a searchsorted per draw."""
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    p = ranks**-a
    cdf = np.cumsum(p / p.sum())
    perm = rng.permutation(vocab).astype(np.int32)
    bins = (np.arange(2**TABLE_BITS) + 0.5) / 2**TABLE_BITS
    ranks_of_bin = np.minimum(np.searchsorted(cdf, bins), vocab - 1)
    return perm[ranks_of_bin], perm


def _rarity(vocab: int, perm: np.ndarray) -> np.ndarray:
    factor = np.empty(vocab, dtype=np.float32)
    factor[perm] = 0.5 + 0.5 * np.log(np.arange(vocab) + 2.0) / np.log(vocab)
    return factor


def _rows(
    rng: np.random.Generator, table: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct Zipfian term ids per row: draw 1.6x with replacement, dedupe, keep a random
    ``lengths[i]`` of the distinct ones. Returns (indptr, indices sorted per row)."""
    n, width = len(lengths), int(lengths.max() * 1.6) + 8
    draws = table[rng.integers(0, len(table), (n, width))]
    draws.sort(axis=1)
    dup = np.zeros_like(draws, dtype=bool)
    dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
    keys = rng.random((n, width))
    keys[dup] = 2.0
    order = np.argsort(keys, axis=1)
    keep = np.zeros_like(draws, dtype=bool)
    distinct = (~dup).sum(axis=1)
    take = np.minimum(lengths, distinct)
    cols = np.arange(width)[None, :] < take[:, None]
    rows_idx = np.broadcast_to(np.arange(n)[:, None], (n, width))
    keep[rows_idx[cols], order[cols]] = True
    indices = draws[keep]  # row-major, still sorted within each row
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(take, out=indptr[1:])
    return indptr, indices.astype(np.int32)


def _weights(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.clip(np.exp(rng.normal(-0.7, 0.7, size)), 0.01, 3.0).astype(np.float32)


def iter_docs(n: int, seed: int = 0, chunk: int = 10_000) -> Iterator[sp.csr_matrix]:
    """``n`` documents as CSR chunks (docs x VOCAB, float32), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    table, perm = _zipf_table(VOCAB, ZIPF_A, rng)
    rarity = _rarity(VOCAB, perm)
    topics = table[rng.integers(0, len(table), (TOPICS, TOPIC_TERMS))]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        # drawn 1.2x: topic and background draws overlap, ~250 distinct terms remain
        lengths = np.clip(np.rint(np.exp(rng.normal(np.log(1.2 * DOC_TERMS), 0.3, m))), 20, 700)
        n_topic = np.rint(lengths * TOPIC_SHARE).astype(np.int64)
        indptr, indices = _rows(rng, table, (lengths - n_topic).astype(np.int64))
        background = sp.csr_matrix(
            (_weights(rng, len(indices)) * 0.5, indices, indptr), shape=(m, VOCAB)
        )
        topic = rng.integers(0, TOPICS, m)
        picks = np.argsort(rng.random((m, TOPIC_TERMS)), axis=1)
        cols = np.arange(TOPIC_TERMS)[None, :] < n_topic[:, None]
        rows = np.broadcast_to(np.arange(m)[:, None], (m, TOPIC_TERMS))[cols]
        terms = topics[topic[rows], picks[cols]]
        focused = sp.csr_matrix(
            (_weights(rng, len(terms)), (rows, terms)), shape=(m, VOCAB)
        )  # duplicate topic draws add up, as an activation would
        both = (background.maximum(focused)).tocsr()
        both.data = np.minimum(both.data, 3.0) * rarity[both.indices]
        both.sort_indices()
        yield both.astype(np.float32)


def docs(n: int, seed: int = 0) -> sp.csr_matrix:
    return sp.vstack(list(iter_docs(n, seed)), format="csr")


def queries(corpus: sp.csr_matrix, n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` queries of about QUERY_TERMS terms: (term ids ascending int64, weights f32)."""
    rng = np.random.default_rng(seed)
    table, _ = _zipf_table(VOCAB, ZIPF_A, np.random.default_rng(0))
    out = []
    for _ in range(n):
        row = corpus[int(rng.integers(corpus.shape[0]))]
        p = row.data / row.data.sum()
        own = rng.choice(row.indices, size=min(QUERY_FROM_DOC, row.nnz), replace=False, p=p)
        noise = table[rng.integers(0, len(table), QUERY_TERMS - QUERY_FROM_DOC)]
        ids = np.unique(np.concatenate([own, noise])).astype(np.int64)
        out.append((ids, _weights(rng, len(ids))))
    return out
