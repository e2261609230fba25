"""A throw-away PostgreSQL cluster for the test session.

``start_cluster()`` runs Debian's ``initdb`` / ``pg_ctl`` (highest version under
``/usr/lib/postgresql/*/bin``) on a temporary data directory, listening on 127.0.0.1 only with
trust authentication for the superuser role ``postgres``. As root the server binaries are run
through ``runuser -u postgres --`` because ``initdb`` and ``postgres`` refuse to run as root.
Anything that goes wrong raises ``PgUnavailable`` with the reason and the server log's tail.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import LiteralString

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
SESSION_DB = "fenliu_test"


class PgUnavailable(RuntimeError):
    """PostgreSQL could not be found, initialised or started."""


def find_bindir(root: Path | None = None) -> Path:
    """The ``bin`` directory of the highest installed PostgreSQL major version."""
    root = root or PG_ROOT
    found: list[tuple[int, Path]] = []
    for d in root.glob("*/bin"):
        if d.parent.name.isdigit() and (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            found.append((int(d.parent.name), d))
    if not found:
        raise PgUnavailable(f"no PostgreSQL server binaries under {root}/*/bin "
                            "(apt-get install postgresql, or run: bash scripts/setup.sh test)")
    return max(found)[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """A running throw-away cluster; ``stop()`` shuts it down and deletes its files."""

    bindir: Path
    tmpdir: Path
    port: int
    as_postgres: bool
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    _stopped: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        return self.tmpdir / "server.log"

    def url(self, dbname: str = SESSION_DB) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DBNAME`` (no password: trust on loopback)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def server_cmd(self, tool: str, *args: str) -> list[str]:
        """A command line for one of the server's tools, as the ``postgres`` user when root."""
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", SUPERUSER, "--", *cmd] if self.as_postgres else cmd

    def run(self, tool: str, *args: str, timeout: float = 60,
            client: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a server tool (a ``client`` tool as ourselves); raise ``PgUnavailable`` with its
        output and the server log's tail on failure."""
        cmd = [str(self.bindir / tool), *args] if client else self.server_cmd(tool, *args)
        try:
            res = subprocess.run(cmd, cwd=self.tmpdir, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PgUnavailable(f"{' '.join(cmd)}: {e}{self.log_tail()}") from e
        if res.returncode != 0:
            raise PgUnavailable(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}{res.stderr}"
                                f"{self.log_tail()}")
        return res

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server log, for error messages ('' if there is none)."""
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- server log ---\n" + "\n".join(text)

    def is_ready(self) -> bool:
        """Whether the server accepts TCP connections on 127.0.0.1 (``pg_isready``)."""
        res = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                              "-U", self.user, "-d", "postgres"], capture_output=True, timeout=10)
        return res.returncode == 0

    def create_database(self, name: str) -> str:
        """Create an empty database (owned by ``postgres``) and return its URL."""
        self._admin("CREATE DATABASE {}", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def _admin(self, template: LiteralString, name: str) -> None:
        """One statement about database ``name`` on the maintenance database, autocommit."""
        import psycopg  # the project's PostgreSQL driver; only needed once a cluster runs
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as con:
            con.execute(sql.SQL(template).format(sql.Identifier(name)))

    def halt(self) -> None:
        """Stop the server (fast: connections cut, as a restart does), keeping its files."""
        self.run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def restart(self, timeout: float = 30.0) -> None:
        """Start the halted server again on the same port, and wait until it accepts connections."""
        self.run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", str(int(timeout)), "start",
                 timeout=timeout + 10)
        _wait_ready(self, timeout)

    def stop(self) -> None:
        """Stop the server immediately and remove the temporary directory (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(self.server_cmd("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"),
                           cwd=self.tmpdir, capture_output=True, timeout=60)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def start_cluster(timeout: float = 30.0, attempts: int = 3) -> PgCluster:
    """Initialise and start a cluster in a new temporary directory; wait until it is ready
    and create the database ``fenliu_test``. Tries a few ports in case one is taken meanwhile."""
    bindir = find_bindir()
    as_postgres = os.geteuid() == 0
    tmpdir = Path(tempfile.mkdtemp(prefix="fenliu-pg-"))
    cluster = PgCluster(bindir, tmpdir, 0, as_postgres)
    atexit.register(cluster.stop)  # also if the session is torn down abnormally
    try:
        if as_postgres:
            if shutil.which("runuser") is None:
                raise PgUnavailable("running as root needs runuser(1) to start PostgreSQL as 'postgres'")
            try:
                shutil.chown(tmpdir, user=SUPERUSER, group=SUPERUSER)
            except (LookupError, PermissionError) as e:
                raise PgUnavailable(f"running as root needs a '{SUPERUSER}' system user to own the "
                                    f"data directory (apt-get install postgresql creates it): {e}") from e
        cluster.run("initdb", "-D", str(cluster.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                    "--locale=C", "--no-sync")
        base_conf = (cluster.datadir / "postgresql.conf").read_text()
        for _ in range(attempts):
            cluster.port = _free_port()
            # written to the config file rather than `pg_ctl -o` so no shell quoting is involved
            (cluster.datadir / "postgresql.conf").write_text(base_conf + _settings(cluster))
            cluster.logfile.unlink(missing_ok=True)
            try:
                cluster.run("pg_ctl", "-D", str(cluster.datadir), "-l", str(cluster.logfile), "-w",
                            "-t", str(int(timeout)), "start", timeout=timeout + 10)
                break
            except PgUnavailable:
                if "already in use" not in cluster.log_tail():
                    raise
        else:
            raise PgUnavailable(f"no free port after {attempts} tries{cluster.log_tail()}")
        _wait_ready(cluster, timeout)
        cluster.run("createdb", "-h", cluster.host, "-p", str(cluster.port), "-U", SUPERUSER, SESSION_DB,
                    client=True)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _settings(cluster: PgCluster) -> str:
    return (
        "\n# fenliu tests: loopback only, throw-away durability\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {cluster.port}\n"
        f"unix_socket_directories = '{cluster.tmpdir}'\n"
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        "max_connections = 200\n"
    )


def _wait_ready(cluster: PgCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cluster.is_ready():
        if time.monotonic() > deadline:
            raise PgUnavailable(f"server on 127.0.0.1:{cluster.port} not ready within {timeout} s"
                                f"{cluster.log_tail()}")
        time.sleep(0.1)


def random_db_name(prefix: str = "t_") -> str:
    """A fresh database name such as ``t_3f9a0c1b2d4e``."""
    return prefix + secrets.token_hex(6)
