"""The model registry: exact names, verified weights, idempotent fetch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from twofold.core.errors import ModelError, UnknownNameError
from twofold.models.registry import MODELS, fetch, resolve, verify


def test_unknown_name_lists_known() -> None:
    with pytest.raises(UnknownNameError, match="known: minilm-l6, splade-tiny"):
        MODELS.get("minilm")
    with pytest.raises(UnknownNameError):
        resolve("splade")  # no guessing by substring


def test_fetch_is_a_noop_when_verified() -> None:
    for name in MODELS.names():
        path = fetch(name)
        marker = path / ".verified"
        stamp = marker.stat().st_mtime_ns
        assert fetch(name) == path and marker.stat().st_mtime_ns == stamp
        verify(MODELS.get(name), path)
        assert resolve(name) == path


def test_verify_detects_tampering(tmp_path: Path) -> None:
    spec = MODELS.get("splade-tiny")
    copy = tmp_path / "m"
    shutil.copytree(spec.path(), copy)
    (copy / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"sha256 of config\.json"):
        verify(spec, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        verify(spec, copy)


def test_resolve_directory_and_hub_id(tmp_path: Path) -> None:
    assert resolve(str(tmp_path)) == tmp_path
    assert resolve("naver/splade-v3") == "naver/splade-v3"
