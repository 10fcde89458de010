"""Alembic environment: runs pipeline's migrations on a given connection.

pipeline calls Alembic from code (``pipeline.database.migrate``) and hands
it an open connection in ``config.attributes["connection"]``; without one
(a developer running ``alembic`` by hand) it connects to ``sqlalchemy.url``.
"""

from alembic import context
from sqlalchemy import create_engine

from pipeline.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
