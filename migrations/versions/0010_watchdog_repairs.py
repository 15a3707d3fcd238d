"""watchdog repairs counted in a column of stage_runs and operations

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 17:00:00

The watchdog used to count its repairs by matching history messages; history is pruned, so the
count (and the limit of three) could reset. The upgrade starts each count from the history that
is still there.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = {"stage_runs": "stage", "operations": "operation"}


def upgrade():
    for table, entity in TABLES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("repairs", sa.Integer(), server_default="0", nullable=False)
            )
        op.execute(
            f"UPDATE {table} SET repairs = (SELECT count(*) FROM history_events h "
            f"WHERE h.entity = '{entity}' AND h.entity_id = {table}.id "
            "AND h.message LIKE 'Re-enqueued by the watchdog%')"
        )


def downgrade():
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("repairs")
