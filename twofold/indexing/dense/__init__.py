"""Dense sub-indexes ``dense`` and ``interests``, and the dense query adapter's format."""
