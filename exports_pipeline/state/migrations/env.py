"""Alembic environment for the state database.

Normally `state.migrate` hands over a connection that is already inside its locked transaction. Without
one (the `alembic` CLI with `-x url=...` or `sqlalchemy.url`, e.g. to write a new revision), a connection
is opened here the same way. `render_as_batch` keeps future ALTERs working on SQLite.
"""

from __future__ import annotations

from alembic import context

from exports_pipeline.state.engine import make_engine, write_tx
from exports_pipeline.state.migrate import VERSION_TABLE
from exports_pipeline.state.tables import metadata

config = context.config
# transactional_ddl: both backends run the DDL inside our BEGIN (see state.engine), so say so.
OPTIONS = dict(target_metadata=metadata, version_table=VERSION_TABLE, render_as_batch=True, compare_type=True,
               transactional_ddl=True)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection in config.attributes or -x url=...")
    return url


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTIONS)
        context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with write_tx(engine) as conn:
            context.configure(connection=conn, **OPTIONS)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
