"""Staged output of every trainer: a model directory is written into a hidden sibling
(``.NAME.partial``) and put in place with a rename, so an interrupted run never leaves
half a model at ``--out``, and an earlier result stays until the new one is complete.

Every output directory holds ``training_args.json`` (what ran, with which settings, and
its figures) and ``MODEL_CARD.md`` (the same for a person: data, command, steps, seeds,
metrics). ``training_args.json`` carries a ``"trainer"`` key: it marks a directory that
Twofold made, the only kind of existing directory a trainer will replace.

Refused outputs: anything inside the model cache (``twofold models fetch`` owns it), a
file, the student's own base directory, and a non-empty directory Twofold did not make.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError
from twofold.indexing.publish import fsync_path
from twofold.models.registry import model_cache

ARGS_FILE = "training_args.json"
CARD_FILE = "MODEL_CARD.md"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def made_by_twofold(directory: Path) -> bool:
    """Whether ``directory`` holds a ``training_args.json`` that a Twofold trainer wrote."""
    try:
        record = json.loads((directory / ARGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "trainer" in record


def check_output(out: Path, base_dir: Path | str | None = None) -> Path:
    """``out`` resolved, or an :class:`InputError` saying why a trainer must not write there."""
    resolved = out.resolve()
    if _inside(resolved, model_cache()):
        raise InputError(
            f"--out {out} is inside the model cache {model_cache()}, which `twofold models "
            "fetch` owns; write the trained model somewhere else (e.g. build/my-model)"
        )
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if isinstance(base_dir, Path) and resolved == base_dir.resolve():
        raise InputError(f"--out {out} is the base model's directory; pick another")
    if resolved.is_dir() and any(resolved.iterdir()) and not made_by_twofold(resolved):
        raise InputError(
            f"--out {out} is a non-empty directory that no Twofold trainer made (it has no "
            f"{ARGS_FILE} of ours); pick a new or empty directory"
        )
    return resolved


def command_line() -> str:
    """The command that is running, as a shell line (for the model card)."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    return shlex.join(argv)


def model_card(record: Mapping[str, Any]) -> str:
    """MODEL_CARD.md text from a training record: what it is, the data, the command, the
    steps and seed, and every figure the trainer measured."""
    lines = [f"# {record.get('title', record['trainer'])}", ""]
    if record.get("description"):
        lines += [str(record["description"]), ""]
    lines += [
        f"- trainer: `{record['trainer']}`",
        f"- created: {record.get('created', '')}",
        f"- command: `{record.get('command', '')}`",
    ]
    for key in ("base", "data", "queries", "examples", "steps", "epochs", "seed", "seconds"):
        if key in record:
            lines.append(f"- {key}: {record[key]}")
    metrics = record.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    lines += ["", f"All settings are in `{ARGS_FILE}`.", ""]
    return "\n".join(lines)


def record_files(record: Mapping[str, Any]) -> dict[str, str]:
    """``{training_args.json: ..., MODEL_CARD.md: ...}`` for a training record (dated, with
    the command line)."""
    full = {"created": datetime.now(UTC).isoformat(timespec="seconds"), **record}
    full.setdefault("command", command_line())
    return {ARGS_FILE: json.dumps(full, indent=2, default=str) + "\n", CARD_FILE: model_card(full)}


def write_record(directory: Path, record: Mapping[str, Any]) -> None:
    """``training_args.json`` and ``MODEL_CARD.md`` into ``directory``."""
    for name, text in record_files(record).items():
        (directory / name).write_text(text, encoding="utf-8")


@contextmanager
def staged_output(out: Path, base_dir: Path | str | None = None) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out``; on a clean exit it replaces
    ``out`` (checked first with :func:`check_output`). On an error the staging directory
    is removed and ``out`` is untouched. The caller writes the record into the staging
    directory (:func:`write_record`) before leaving the block."""
    target = check_output(out, base_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    old = target.with_name(f".{target.name}.old")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        if not made_by_twofold(staging):
            raise InputError(f"trainer wrote no {ARGS_FILE} into its output")
        for f in staging.iterdir():
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():  # set the earlier result aside; a crash now leaves it recoverable
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        staging.rename(target)
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish_model(
    out: Path,
    write: Callable[[Path], None],
    record: Mapping[str, Any],
    base_dir: Path | str | None = None,
) -> Path:
    """Stage ``write(dir)`` plus the record (training_args.json, MODEL_CARD.md) and put the
    result at ``out``; returns the published path."""
    with staged_output(out, base_dir) as staging:
        write(staging)
        write_record(staging, record)
    return out.resolve()
