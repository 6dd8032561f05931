"""Twofold: learned sparse + dense retrieval, one pipeline from index build to HTTP."""

__version__ = "0.1.0"
