"""Typed vocabulary, errors and registries shared by every layer (no torch, no fastapi)."""
