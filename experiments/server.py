"""A team's MLflow tracking server: `mlflow server` on a PostgreSQL backend store with proxied artifacts.

    python -m experiments.server --backend-store-uri postgresql://USER:PASSWORD@DBHOST:5432/mlflow \\
        --artifacts-destination /shared/mlartifacts --port 5000            # binds to 127.0.0.1 unless --host
    python -m experiments.server --local-postgres pgdata --artifacts-destination mlartifacts --port 5000

The first migrates the database schema (`mlflow db upgrade`) and then becomes `mlflow server`. The second is
for trying it out: it also starts a throwaway PostgreSQL in the folder pgdata (initdb on first use, trust
authentication, loopback only) and stops it when the server stops. Runs and sweeps then use
`tracking_uri=http://HOST:PORT`: workers talk HTTP to the server and never open a database connection.
Needs the `server` extra (psycopg, SQLAlchemy's driver for postgresql:// URIs) and, for --local-postgres, PostgreSQL's server binaries.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else Debian's versioned folder (/usr/lib/postgresql/N/bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


class LocalPostgres:
    """A throwaway PostgreSQL in one folder, listening on 127.0.0.1 only, with trust authentication.

    initdb and the server refuse to run as root: as root they run as the `postgres` user (Debian's package
    creates it), and the folder is handed to that user."""

    def __init__(self, data_dir: Path | str, port: int | None = None, database: str = "mlflow"):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.database = database
        self.user = "postgres"

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() != 0:
            return list(cmd)
        runuser = shutil.which("runuser")
        if runuser is None:
            raise SystemExit("error: PostgreSQL refuses to run as root and runuser is missing: run as another user")
        return [runuser, "-u", "postgres", "--", *cmd]

    def start(self) -> LocalPostgres:
        initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise SystemExit("error: PostgreSQL's initdb/pg_ctl not found: install it (Debian: apt-get install "
                             "postgresql) or pass --backend-store-uri of a database you run")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            self.data_dir.chmod(0o700)
        else:
            self.user = os.environ.get("USER") or "postgres"  # initdb makes the running user the superuser
        if not (self.data_dir / "PG_VERSION").is_file():
            subprocess.run(self._as_owner(initdb, "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                                          "-E", "UTF8", "--no-sync"), check=True, capture_output=True, text=True)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off"
        subprocess.run(self._as_owner(pg_ctl, "-D", str(self.data_dir), "-o", options, "-l",
                                      str(self.data_dir / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, text=True)
        self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        pg_ctl = pg_binary("pg_ctl")
        if pg_ctl and (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._as_owner(pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
                           capture_output=True, text=True)


def upgrade_schema(backend_store_uri: str) -> None:
    """`mlflow db upgrade` on a database that already holds MLflow's tables; a new, empty database gets the
    current schema from the server itself when it starts (db upgrade needs the initial tables)."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(backend_store_uri)
    try:
        has_tables = inspect(engine).has_table("alembic_version")
    finally:
        engine.dispose()
    if has_tables:
        subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", backend_store_uri], check=True)


def server_command(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int,
                   extra: list[str] | tuple = ()) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--serve-artifacts", "--artifacts-destination", artifacts_destination,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if "--uvicorn-opts" not in extra and "--gunicorn-opts" not in extra:
        # uvicorn restarts a worker that has not answered its health check within 5 s, and importing
        # MLflow's app can take longer than that on a loaded machine: the workers would never come up
        cmd += ["--uvicorn-opts", "--timeout-worker-healthcheck 120"]
    return cmd + list(extra)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # MLflow 3's background job runners (GenAI scorers, prompt optimisation) are not used by tracking
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def wait_until_up(url: str, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with status {proc.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no MLflow server answered at {url} within {timeout:.0f} s")


class TrackingServer:
    """`mlflow server` as a child process group (it starts uvicorn and its workers): start() migrates the
    schema, starts it and waits until it answers; stop() ends the whole group."""

    def __init__(self, backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1",
                 port: int | None = None, workers: int = 4, extra: list[str] | tuple = ()):
        self.cmd = server_command(backend_store_uri, artifacts_destination, host, port or free_port(), workers, extra)
        self.backend_store_uri, self.host = backend_store_uri, host
        self.port = int(self.cmd[self.cmd.index("--port") + 1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log=None, timeout: float = 180) -> TrackingServer:
        upgrade_schema(self.backend_store_uri)
        self.proc = subprocess.Popen(self.cmd, env=server_env(), start_new_session=True,
                                     stdout=log, stderr=subprocess.STDOUT if log else None)
        try:
            wait_until_up(self.url, timeout, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self) -> int:
        return self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None and not _group_alive(self.proc.pid):
            return
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            deadline = time.time() + grace
            while time.time() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()
                time.sleep(0.2)
            if not _group_alive(self.proc.pid):
                break
        self.proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Arguments after -- go to `mlflow server` unchanged (e.g. -- --allowed-hosts ...).")
    db = p.add_mutually_exclusive_group(required=True)
    db.add_argument("--backend-store-uri", help="the PostgreSQL database, postgresql://USER:PASSWORD@HOST:PORT/DB")
    db.add_argument("--local-postgres", metavar="DIR",
                    help="start a throwaway PostgreSQL in DIR (trying it out; loopback only, trust auth)")
    p.add_argument("--artifacts-destination", required=True,
                   help="where the server stores artifacts it proxies (a folder, s3://..., ...)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s; 0.0.0.0 for a team)")
    p.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default: %(default)s)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    artifacts = args.artifacts_destination
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        artifacts = str(Path(artifacts).resolve())
    if args.backend_store_uri:
        upgrade_schema(args.backend_store_uri)
        cmd = server_command(args.backend_store_uri, artifacts, args.host, args.port, args.workers, extra)
        os.execve(cmd[0], cmd, server_env())  # becomes the server: signals and the exit status are mlflow's own
    pg = LocalPostgres(args.local_postgres).start()
    print(f"PostgreSQL on 127.0.0.1:{pg.port} (data in {pg.data_dir})", flush=True)
    # SIGTERM (kill, timeout, a service manager) stops the server and then PostgreSQL, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    server = TrackingServer(pg.uri, artifacts, args.host, args.port, args.workers, extra)
    try:
        server.start()
        print(f"serving: tracking_uri={server.url}", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
