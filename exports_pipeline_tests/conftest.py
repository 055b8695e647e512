"""Real services for the test session: chDB, PostgreSQL, moto's S3 server, a ClickHouse HTTP shim.

Nothing here mocks a library in-process: every fixture starts (or points at) a real peer that the code
under test reaches over its normal transport.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest

# Shared fixtures that live in their own modules (real S3 peers, a seeded events table, SMTP servers).
pytest_plugins = [
    "exports_pipeline_tests.s3_peers", "exports_pipeline_tests.seeded_events", "exports_pipeline_tests.smtp_peers",
    "exports_pipeline_tests.posthog_peers", "exports_pipeline_tests.mixpanel_peers",
]

# chDB allows one data directory per process: the whole session shares one, and tests isolate by database.
_SESSION_HOME = tempfile.mkdtemp(prefix="exports-test-home-")
os.environ.setdefault("EXPORTS_HOME", _SESSION_HOME)
# Commands register partitions in the Dagster instance of DAGSTER_HOME (`make test` exports the demo's):
# the tests get one of their own, so they never write into a developer's instance.
os.environ["DAGSTER_HOME"] = os.path.join(_SESSION_HOME, "dagster")
os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
CHDB_PATH = os.path.join(_SESSION_HOME, "chdb")
os.makedirs(CHDB_PATH, exist_ok=True)


def _engine_lingers() -> None:
    """Tests query between runs, a few queries at a time: the engine stays open half a second after each
    so these share one start (each start leaves threads behind: `EmbeddedEngine`); a subprocess on the
    same directory waits that much longer."""
    from exports_pipeline.resources.clickhouse import embedded_engine

    embedded_engine(CHDB_PATH).linger_seconds = 0.5


_engine_lingers()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chdb_path() -> str:
    """The one chDB data directory of this test process."""
    return CHDB_PATH


@pytest.fixture(scope="session")
def chdb_url(chdb_path: str) -> str:
    return f"chdb://{chdb_path}"


@pytest.fixture
def ch_database(chdb_path: str) -> Iterator[str]:
    """A fresh ClickHouse database for one test, dropped afterwards."""
    from exports_pipeline.resources.clickhouse import chdb_client

    name = f"t_{uuid.uuid4().hex[:12]}"
    with chdb_client(chdb_path) as client:
        client.command(f"CREATE DATABASE {name}")
    yield name
    with chdb_client(chdb_path) as client:
        client.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def ch_client(chdb_path: str, ch_database: str):
    """A clickhouse-connect client on the test's own database (engine lock held for the test)."""
    from exports_pipeline.resources.clickhouse import chdb_client

    with chdb_client(chdb_path, database=ch_database) as client:
        yield client


# --------------------------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> str:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster from the local binaries (or EXPORTS_TEST_DATABASE_URL when set).

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user.
    Yields a SQLAlchemy URL of the server's maintenance database.
    """
    external = os.environ.get("EXPORTS_TEST_DATABASE_URL")
    if external:
        yield external
        return
    bindir = _pg_bindir()
    base = tempfile.mkdtemp(prefix="exports-pg-")
    data = os.path.join(base, "data")
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True)

    run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    run(
        f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(base, "pg.log"), "-o",
        f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        "start",
    )
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_database_url(request, tmp_path) -> str:
    """The pipeline's own database, once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_database_url")


# ------------------------------------------------------------------------------------------------ S3 (moto)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP; boto3 talks to it exactly as to AWS."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> Iterator[str]:
    """A fresh bucket on the moto server."""
    import boto3

    name = f"bucket-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=name)
    yield name


# ------------------------------------------------------------------------------------- ClickHouse over HTTP


@pytest.fixture(scope="session")
def chdb_http(chdb_path: str) -> Iterator:
    """The session's chDB served over ClickHouse's HTTP interface (see chdb_http.py)."""
    from exports_pipeline_tests.chdb_http import ChdbHttpServer

    server = ChdbHttpServer(chdb_path).start()
    yield server
    server.stop()


@pytest.fixture
def ch_http_url(chdb_http, ch_database: str) -> str:
    """An http:// ClickHouse URL (with a password, to prove it is masked) on the test's own database."""
    return f"http://default:s3cr3t-pw@127.0.0.1:{chdb_http.port}/{ch_database}?compress=false"
