"""The production path on Citus (docs/scale.md): Citus cannot run here, so these check the
statements `imgsearch db distribute` would run and the compose file's structure, not a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import citus, db
from engine.errors import FeatureUnavailableError, InputError

ROOT = Path(__file__).resolve().parent.parent
CO_LOCATED = ["image_uris", "regions", "image_keypoints", "keypoint_words", "linked_images"]


def test_distribute_makes_images_and_their_parts_co_located_distributed_tables():
    shown = citus.distribute(None, workers=["worker1", "worker2:5433"], coordinator="coordinator", dry_run=True)
    assert shown[0] == "select citus_set_coordinator_host('coordinator', 5432);"
    assert shown[1:3] == ["select citus_add_node('worker1', 5432);", "select citus_add_node('worker2', 5433);"]
    text = "\n".join(shown)
    assert text.index("create extension if not exists citus") < text.index("create_distributed_table('images', 'id')")
    for table in CO_LOCATED:
        assert f"create_distributed_table('{table}', 'image_id', colocate_with => 'images')" in text
    # unique keys without the distribution column go before distributing; edges stay on the coordinator
    assert text.index("drop constraint if exists images_sha256_key") < text.index("'images', 'id'")
    assert "citus_add_local_table_to_metadata('edges')" in text
    with pytest.raises(InputError):
        citus.distribute(None, workers=["worker1:x"], dry_run=True)


def test_every_table_of_the_schema_is_placed(conn):
    tables = {r["relname"] for r in conn.execute(
        "select relname from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace").fetchall()}
    text = "\n".join(text for _, text in citus.steps())
    placed = {t for t in tables if f"'{t}'" in text}
    assert tables - placed == {"schema_migrations", "shards"}, "a new table needs a place in sql/citus.sql"


def test_distribute_without_citus_says_so(conn):
    with pytest.raises(FeatureUnavailableError, match="Citus"):
        citus.distribute(conn)
    assert db.status(conn)["counts"]["images"] == 0  # nothing was changed


def test_cli_dry_run(database_url):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "db", "distribute", "--dry-run", "--json",
                        "--workers", "worker1,worker2"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DATABASE_URL": database_url})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dry_run"] and "select citus_add_node('worker2', 5432);" in out["statements"]


def test_citus_compose_file():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker" / "compose.citus.yaml").read_text())
    services = compose["services"]
    assert {"coordinator", "worker1", "worker2", "app"} <= set(services)
    for node in ("coordinator", "worker1", "worker2"):
        assert services[node]["build"]["dockerfile"] == "docker/Dockerfile.citus"
        assert "pg_isready" in " ".join(services[node]["healthcheck"]["test"])
        assert services[node]["volumes"][0].split(":")[0] in compose["volumes"]
    app = services["app"]
    assert "@coordinator:5432/" in app["environment"]["DATABASE_URL"]  # the engine talks to the coordinator
    assert set(app["depends_on"]) == {"coordinator", "worker1", "worker2"}
    dockerfile = (ROOT / "docker" / "Dockerfile.citus").read_text()
    assert dockerfile.splitlines()[2].startswith("FROM citusdata/citus:") and "pgvector" in dockerfile
