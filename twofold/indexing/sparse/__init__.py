"""Learned-sparse sub-indexes ``sparse`` and ``splade``: the format, its builder and engines."""
