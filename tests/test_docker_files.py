"""docker/: Docker does not run on our machines, so check the files' structure instead.

The Dockerfile checks need nothing. The compose.yaml checks parse it with PyYAML, which is not
one of our dependencies: they skip when it is not installed (a plain-text check always runs).
"""

from __future__ import annotations

import json
import re
import tomllib
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_dockerfile_base_install_user_and_command():
    rows = dockerfile_instructions()
    words = [word for word, _ in rows]
    assert rows[0] == ("FROM", "python:3.11-slim")
    assert words.count("CMD") == 1 and words[-1] == "CMD"
    cmd = json.loads(dict(rows)["CMD"])  # exec form: signals reach imgsearch, not a shell
    assert cmd[:2] == ["imgsearch", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "imgsearch" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    # installed with pip, then dropped to a non-root user before the command runs
    install = next(i for i, (word, args) in enumerate(rows) if word == "RUN" and "pip install" in args)
    users = [(i, args) for i, (word, args) in enumerate(rows) if word == "USER"]
    assert users and users[-1][0] > install and users[-1][1] not in ("root", "0")
    assert ("EXPOSE", "8000") in rows
    assert "DATABASE_URL" not in dict(rows).get("ENV", "")  # comes from the environment, never baked in


def test_dockerfile_copies_what_pip_install_needs():
    copied = set()
    for word, args in dockerfile_instructions():
        if word == "COPY":
            copied.update(p.rstrip("/") for p in args.split()[:-1] if not p.startswith("--"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {name.split(".")[0] for name in project["tool"]["setuptools"]["packages"]}
    needed |= {folder.split("/")[0] for folder in project["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= copied, f"the Dockerfile does not COPY {needed - copied}"
    for path in copied:
        assert (ROOT / path).exists(), f"COPY {path}: no such path in the repository"


def test_compose_text_without_yaml():
    text = (DOCKER / "compose.yaml").read_text()
    for needle in ("pgvector/pgvector:pg17", "pg_isready", "service_healthy", "@db:5432/",
                   "dockerfile: docker/Dockerfile"):
        assert needle in text


# --- compose.yaml, parsed --------------------------------------------------------------------------
def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, with every VAR unset."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def env(service: dict) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value)) for key, value in raw.items()}


def test_compose_services_and_images(compose):
    assert set(compose["services"]) == {"db", "app"}
    assert compose["services"]["db"]["image"] == "pgvector/pgvector:pg17"
    build = compose["services"]["app"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_compose_database_volume_and_healthcheck(compose):
    db = compose["services"]["db"]
    settings = env(db)
    assert settings["POSTGRES_PASSWORD"] and settings["POSTGRES_USER"] and settings["POSTGRES_DB"]
    volume, _, mount = db["volumes"][0].partition(":")
    assert mount == "/var/lib/postgresql/data" and volume in compose["volumes"]
    check = db["healthcheck"]["test"]
    command = " ".join(check[1:]) if isinstance(check, list) else check
    assert "pg_isready" in command
    assert f"-U {settings['POSTGRES_USER']}" in command and f"-d {settings['POSTGRES_DB']}" in command
    assert {"interval", "retries"} <= set(db["healthcheck"])


def test_compose_app_database_url_matches_db(compose):
    app, db = compose["services"]["app"], compose["services"]["db"]
    url = urllib.parse.urlsplit(env(app)["DATABASE_URL"])
    settings = env(db)
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port or 5432) == ("db", 5432)
    assert urllib.parse.unquote(url.username) == settings["POSTGRES_USER"]
    assert urllib.parse.unquote(url.password) == settings["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == settings["POSTGRES_DB"]
    # the same variable feeds both sides, so setting POSTGRES_PASSWORD changes both
    raw_url, raw_password = app["environment"]["DATABASE_URL"], db["environment"]["POSTGRES_PASSWORD"]
    assert raw_password in raw_url


def test_compose_app_waits_for_healthy_db_and_publishes_8000(compose):
    app = compose["services"]["app"]
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    container_ports = [str(port).rsplit(":", 1)[-1] for port in app["ports"]]
    assert "8000" in container_ports
    assert "ports" not in compose["services"]["db"]  # the database is not published


def test_every_engine_package_is_installed_by_pip_install():
    """The Dockerfile runs `pip install .` (not editable): setuptools ships only the packages
    pyproject.toml lists, so a subpackage missing there (engine.regions was) breaks the image."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "engine").rglob("__init__.py")}
    assert found <= listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(found - listed)}"
