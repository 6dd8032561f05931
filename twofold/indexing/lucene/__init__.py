"""Lucene through the in-process JVM: the ``bm25`` sub-index and impact-index search."""
