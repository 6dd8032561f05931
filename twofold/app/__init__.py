"""The FastAPI service, its web page and the ``twofold`` command line."""
