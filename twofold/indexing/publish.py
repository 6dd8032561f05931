"""Publish a finished build so that the collection's name never goes missing.

``--out NAME`` is a symbolic link to a versioned sibling directory ``.NAME.v<N>``.
Publishing a build:

1. fsyncs every file and directory of the finished staging directory;
2. renames it to the next version ``.NAME.v<N+1>`` and fsyncs the parent;
3. points a temporary link ``.NAME.link-<pid>`` at it and renames that link over
   ``NAME`` (``rename(2)`` is atomic: a reader resolves ``NAME`` to the old version or
   to the new one, never to nothing), then fsyncs the parent again;
4. removes the old version. A process that still has it open keeps reading its files
   (unlinked, not gone) until it lets go; ``Collection`` resolves the link once, when
   it opens, so it never mixes two versions.

A power loss leaves either the old link or the new one, each pointing at a complete,
fsynced version. A crash elsewhere leaves stray versions or temporary links, which
:func:`recover_interrupted_publish` removes before the next build (under its lock).

A collection published before links were used (``NAME`` a plain directory) is moved
aside as ``.NAME.old-<pid>`` and replaced by the link: two renames, the only publish
with a window in which ``NAME`` is absent; a crash inside it is repaired by
:func:`recover_interrupted_publish` (the old directory goes back). Later publishes
swap the link.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from twofold.indexing.manifest import MANIFEST, read_manifest

log = logging.getLogger(__name__)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path (a directory: its entries, e.g. after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file under ``root``, then every directory, deepest first
    (a directory's entries are durable once the directory itself is)."""
    dirs = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                fsync_path(path)
        dirs.extend(Path(dirpath) / d for d in dirnames)
    for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_path(directory)


def _version_re(out: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(out.name)}\.v(\d+)$")


def versions(out: Path) -> dict[int, Path]:
    """The version directories ``.NAME.v<N>`` beside ``out``, by ``N``."""
    pattern = _version_re(out)
    found = {}
    for path in out.parent.iterdir() if out.parent.is_dir() else ():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def current_version(out: Path) -> Path | None:
    """The version directory the link ``out`` points at (None: no such link)."""
    if not out.is_symlink():
        return None
    target = out.parent / os.readlink(out)
    return target if target.parent == out.parent and _version_re(out).match(target.name) else None


def recover_interrupted_publish(out: Path) -> None:
    """Finish what a crash during :func:`publish` left: a legacy directory parked as
    ``.NAME.old-PID`` goes back into place if nothing was published at ``out`` (else it
    is deleted); temporary links and version directories ``out`` does not point at are
    deleted. Call it with the build lock held."""
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists() and not out.is_symlink() and (old / MANIFEST).is_file():
            log.warning("restoring %s, parked by an interrupted publish", out)
            old.rename(out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for link in out.parent.glob(f".{out.name}.link-*"):
        link.unlink(missing_ok=True)
    current = current_version(out)
    for path in versions(out).values():
        if path != current:
            log.info("removing %s, left by an interrupted publish", path)
            shutil.rmtree(path, ignore_errors=True)


def publish(staging: Path, out: Path) -> Path:
    """Make the finished build in ``staging`` the collection at ``out`` (a link swapped
    atomically, see the module docstring); returns the new version directory."""
    parent = out.parent
    number = max(versions(out), default=0) + 1
    version = parent / f".{out.name}.v{number}"
    log.info("publishing %s as %s", out, version.name)
    fsync_tree(staging)
    staging.rename(version)
    fsync_path(parent)
    previous = current_version(out)
    if out.exists() and not out.is_symlink():  # a collection from before links
        parked = parent / f".{out.name}.old-{os.getpid()}"
        out.rename(parked)
        os.symlink(version.name, out)
        fsync_path(parent)
        shutil.rmtree(parked, ignore_errors=True)
    else:
        link = parent / f".{out.name}.link-{os.getpid()}"
        link.unlink(missing_ok=True)
        os.symlink(version.name, link)  # relative: the pair can move together
        os.replace(link, out)
        fsync_path(parent)
        if previous is not None and previous != version:
            shutil.rmtree(previous, ignore_errors=True)
    read_manifest(out)  # the published tree must open
    return version
