"""Encoders, rerankers, kNN-Embed mixtures, losses and training loops (no indexing, no search)."""
