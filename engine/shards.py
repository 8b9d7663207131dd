"""Scale out: one index over several PostgreSQL servers (docs/scale.md).

The database the engine talks to (``DATABASE_URL``, or the embedded server) becomes the
*coordinator*: ``images``, ``image_uris``, ``regions``, ``image_keypoints`` and ``keypoint_words``
turn into tables partitioned by hash of the image id, each partition a ``postgres_fdw`` foreign
table on one *shard* (an ordinary imgsearch database, migrated as usual). The engine's SQL is the
same on one server or many: the coordinator's identity sequence gives every image its id, the
row goes to the partition (the shard) its id hashes to, and a search's statement runs on every
shard at once (``async_capable``: a parallel Append over the foreign partitions).

Kept on the coordinator, local: ``edges`` and ``linked_images`` (an edge joins images of two
shards; both are upserted), ``image_digests`` (the SHA-256 of every image: the same bytes are
stored once across all shards), ``shards`` (this catalogue) and ``schema_migrations``.

Shards are set up before data is ingested: ``add`` refuses a coordinator or shard that holds
images (moving rows between shards is not done here; Citus does it, docs/scale.md).

This is the one module that builds SQL per shard (a server, schema or table name cannot be a
bound parameter): with ``psycopg.sql.Identifier`` and ``Literal``, never by concatenation. The
statements that are the same for every shard are in ``sql/shards.sql``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from . import db
from .errors import ConfigError, InputError, ShardUnavailableError
from .queries import parse

# table -> the column holding the image id it is partitioned by
SHARDED_TABLES = {"images": "id", "image_uris": "image_id", "regions": "image_id",
                  "image_keypoints": "image_id", "keypoint_words": "image_id", "image_embeddings": "image_id"}
SERVER_PREFIX = "imgsearch_shard_"
SCHEMA_PREFIX = "shard_"
# postgres_fdw options of every shard's server: the statement of each partition runs at once
# (async_capable); rows come back 10000 per round trip, and go out 1000 per insert
SERVER_OPTIONS = {"async_capable": "true", "fetch_size": "10000", "batch_size": "1000", "connect_timeout": "5"}
_LOGIN_OPTIONS = ("user", "password")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_DOWN_SERVER = re.compile(r'server "' + SERVER_PREFIX + r'([a-z0-9_]+)"')


@dataclass(frozen=True)
class Shard:
    name: str
    url: str
    position: int  # the hash remainder of its images

    @property
    def server(self) -> str:
        return SERVER_PREFIX + self.name

    @property
    def schema(self) -> str:
        return SCHEMA_PREFIX + self.name

    def to_json(self) -> dict:
        return {"name": self.name, "url": redact(self.url), "position": self.position}


@cache
def _queries() -> dict[str, str]:
    return parse(resources.files("engine.sql").joinpath("shards.sql").read_text())


def q(name: str) -> str:
    """A named statement of sql/shards.sql."""
    return _queries()[name]


def redact(url: str) -> str:
    """The URL without its password (shown by `shards list`)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def list_shards(conn: psycopg.Connection) -> list[Shard]:
    return [Shard(r["name"], r["url"], r["position"]) for r in conn.execute(q("list_shards")).fetchall()]


def is_sharded(conn: psycopg.Connection) -> bool:
    return bool(list_shards(conn))


def _server_options(url: str) -> tuple[dict[str, str], dict[str, str]]:
    """libpq options of a shard URL, split into the server's and the user mapping's."""
    try:
        opts = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        raise InputError(f"not a PostgreSQL URL: {redact(url)}: {exc}") from exc
    login = {k: opts.pop(k) for k in _LOGIN_OPTIONS if k in opts}
    return {**SERVER_OPTIONS, **opts}, login


def _options(opts: dict[str, str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in opts.items())


def _prepare_shard(shard_url: str) -> None:
    """Migrate a shard's own schema as any imgsearch database; it must hold no images."""
    with db.raw_connect(shard_url) as sconn:
        db.migrate(sconn)
        if sconn.execute(q("any_image")).fetchone()["found"]:
            raise ConfigError(f"shard {redact(shard_url)} holds images already: add shards to empty databases "
                              "only (docs/scale.md)")
        sconn.execute(q("shard_prepare"))
        sconn.commit()


def add(conn: psycopg.Connection, url: str, name: str | None = None) -> Shard:
    """Add a shard and rebuild the coordinator's partitioned tables over every shard."""
    _server_options(url)
    shards = list_shards(conn)
    name = name or f"s{len(shards) + 1}"
    if not _NAME.match(name):
        raise InputError(f"shard name {name!r}: lower-case letters, digits and _, starting with a letter")
    if any(s.name == name for s in shards):
        raise InputError(f"a shard named {name!r} exists already")
    if any(s.url == url for s in shards):
        raise InputError(f"{redact(url)} is a shard already")
    if conn.execute(q("any_image")).fetchone()["found"]:
        raise ConfigError("this database holds images: configure shards before ingesting (docs/scale.md)")
    _prepare_shard(url)
    with conn.transaction():
        conn.execute(q("add_shard"), {"name": name, "url": url})
        rebuild(conn)
    return next(s for s in list_shards(conn) if s.name == name)


def rebuild(conn: psycopg.Connection) -> None:
    """(Re)create the partitioned tables over the shards in the catalogue, empty, in the caller's
    transaction: one hash partition per shard, a postgres_fdw foreign table in schema
    shard_NAME. The column definitions come from the tables as they are (LIKE), so the
    migrations stay the one description of the schema."""
    shards = list_shards(conn)
    conn.execute("create extension if not exists postgres_fdw")
    for table, key in SHARDED_TABLES.items():
        conn.execute(sql.SQL("create table {} (like {} including defaults including generated including identity) "
                             "partition by hash ({})").format(
            sql.Identifier(table + "__sharded"), sql.Identifier(table), sql.Identifier(key)))
    for shard in shards:
        conn.execute(sql.SQL("drop server if exists {} cascade").format(sql.Identifier(shard.server)))
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(shard.schema)))
    conn.execute(sql.SQL("drop table {} cascade").format(sql.SQL(", ").join(map(sql.Identifier, SHARDED_TABLES))))
    for table in SHARDED_TABLES:
        conn.execute(sql.SQL("alter table {} rename to {}").format(sql.Identifier(table + "__sharded"),
                                                                   sql.Identifier(table)))
    conn.execute(sql.SQL("alter sequence {} rename to {}").format(sql.Identifier("images__sharded_id_seq"),
                                                                  sql.Identifier("images_id_seq")))
    for shard in shards:
        server_opts, login = _server_options(shard.url)
        conn.execute(sql.SQL("create server {} foreign data wrapper postgres_fdw options ({})").format(
            sql.Identifier(shard.server), _options(server_opts)))
        conn.execute(sql.SQL("create user mapping for current_user server {} options ({})").format(
            sql.Identifier(shard.server), _options(login)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(shard.schema)))
        _create_partitions(conn, shard, len(shards))
    _word_frequencies_view(conn, shards)
    conn.execute(q("coordinator_local_tables"))
    conn.execute(q("coordinator_triggers"))
    # joins of two sharded tables by image id run on the shards (one remote join per shard)
    for setting in ("enable_partitionwise_join", "enable_partitionwise_aggregate"):
        conn.execute(sql.SQL("alter database {} set {} = on").format(sql.Identifier(conn.info.dbname),
                                                                     sql.Identifier(setting)))
        conn.execute(sql.SQL("set {} = on").format(sql.Identifier(setting)))


def _word_frequencies_view(conn: psycopg.Connection, shards: list[Shard]) -> None:
    """The coordinator's word_frequencies: the sum of every shard's (each shard keeps its own, by its
    triggers on keypoint_words, migration 0008), so that the look-up run on the coordinator through
    its foreign tables weighs words as one server would. The coordinator's own table, whose
    triggers went with its keypoint_words, is replaced; a view of an earlier rebuild went with the
    shard schemas it read."""
    conn.execute("drop table if exists word_frequencies")
    for shard in shards:
        conn.execute(sql.SQL(
            "create foreign table {}.word_frequencies (word integer not null, postings integer not null) "
            "server {} options (schema_name 'public', table_name 'word_frequencies')").format(
            sql.Identifier(shard.schema), sql.Identifier(shard.server)))
    parts = sql.SQL(" union all ").join(
        sql.SQL("select word, postings from {}.word_frequencies").format(sql.Identifier(s.schema)) for s in shards)
    conn.execute(sql.SQL("create view word_frequencies as select word, sum(postings)::integer as postings "
                         "from ({}) f group by word").format(parts))


def _create_partitions(conn: psycopg.Connection, shard: Shard, count: int) -> None:
    """The shard's foreign tables, in its own schema, as partitions of the engine's tables."""
    for table in SHARDED_TABLES:
        conn.execute(sql.SQL(
            "create foreign table {}.{} partition of {} for values with (modulus {}, remainder {}) "
            "server {} options (schema_name 'public', table_name {})").format(
            sql.Identifier(shard.schema), sql.Identifier(table), sql.Identifier(table), sql.Literal(count),
            sql.Literal(shard.position), sql.Identifier(shard.server), sql.Literal(table)))


def migrate_shards(conn: psycopg.Connection) -> dict[str, list[int]]:
    """Apply new migrations to every shard (before the coordinator's own: a column added to a
    sharded table must exist on the shards when the coordinator's partitions gain it)."""
    done = {}
    for shard in list_shards(conn):
        with db.raw_connect(shard.url) as sconn:
            done[shard.name] = db.migrate(sconn)
            sconn.execute(q("shard_prepare"))
            sconn.commit()
    return done


def sync_statistics(conn: psycopg.Connection) -> int:
    """ANALYZE every shard, then give each shard's images the collection's count (what a search's
    word idf reads: the same weights as on one server). Returns that count; 0 if not sharded."""
    shards = list_shards(conn)
    counts = []
    for shard in shards:
        with db.raw_connect(shard.url, autocommit=True) as sconn:
            sconn.execute(q("shard_analyze"))
            counts.append(sconn.execute(q("image_reltuples")).fetchone()["reltuples"])
    total = sum(counts)
    for shard in shards:
        with db.raw_connect(shard.url, autocommit=True) as sconn:
            sconn.execute(q("set_image_reltuples"), {"reltuples": total})
    return int(total)


def status(conn: psycopg.Connection) -> list[dict]:
    """Every shard, whether it answers, and what it holds."""
    out = []
    for shard in list_shards(conn):
        info = {**shard.to_json(), "up": False}
        try:
            with psycopg.connect(shard.url, connect_timeout=3, autocommit=True) as sconn:
                row = sconn.execute(q("shard_status")).fetchone()
            info.update(up=True, images=row[0], regions=row[1], database_bytes=row[2])
        except psycopg.OperationalError as exc:
            info["error"] = str(exc).strip().splitlines()[0]
        out.append(info)
    return out


def shard_error(exc: psycopg.Error) -> ShardUnavailableError | None:
    """Our error for a statement that failed because a shard does not answer (postgres_fdw
    names the foreign server it could not reach); None for any other failure."""
    m = _DOWN_SERVER.search(str(exc))
    if m is None or not str(exc.sqlstate or "").startswith("08"):
        return None
    first = str(exc).strip().splitlines()[0]
    return ShardUnavailableError(f"shard {m.group(1)} does not answer ({first}): what is stored on it cannot be "
                                 "written until it is back; searches answer from the other shards")
