"""Corpus readers, sub-index builders, on-disk formats, manifest and atomic publish."""
