"""Domain errors. The CLI and the HTTP layer map these to messages and status codes."""

from __future__ import annotations


class TwofoldError(Exception):
    """Base of every error Twofold raises on purpose; its message says what to change."""


class InputError(TwofoldError):
    """Something a user supplied is wrong (a file, a flag, a request field)."""


class CorpusError(InputError):
    """A corpus, query or qrels file has a line that cannot be read."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason}")


class UnknownNameError(InputError):
    """An exact-name lookup failed; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")


class CollectionError(TwofoldError):
    """A collection directory is missing, incomplete or of an unsupported format."""


class FormatVersionError(CollectionError):
    """A manifest's format_version is not one this build of Twofold can read."""


class NotFoundError(InputError):
    """A document id (or other named item) does not exist."""


class ModelError(TwofoldError):
    """A model is missing from the cache, or its weights fail verification."""


class DependencyError(TwofoldError):
    """An optional dependency is not installed; the message says what to install."""
