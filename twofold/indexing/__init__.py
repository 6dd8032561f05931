"""Corpus readers, manifest and atomic publish, and one package per sub-index family
(``lucene``, ``sparse``, ``dense``) holding its on-disk format, builder and engines."""
