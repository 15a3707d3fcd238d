"""answers kept for idempotency keys sealed at rest, like the signing secrets they may show

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:40:00

A kept answer to a new webhook endpoint, a secret rotation or a callback registration shows a
signing secret, so every kept answer is encrypted with the app's SECRETS_KEY (webapp.secret_box)
and the downgrade opens them again. Both need the key the app runs with: run them through
`flask db ...`. No schema change: the column stays TEXT.
"""
from alembic import op
import sqlalchemy as sa
from flask import current_app


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# Every Fernet token starts so (version byte 0x80, then a timestamp below 2**40); a JSON answer
# never does, so a row already sealed (an upgrade run twice) is told apart and left alone.
SEALED_PREFIX = 'gAAAAA'


def upgrade():
    box = _box()
    _rewrite(lambda value: value if value.startswith(SEALED_PREFIX) else box.seal(value))


def downgrade():
    box = _box()
    _rewrite(lambda value: box.open(value) if value.startswith(SEALED_PREFIX) else value)


def _box():
    """The running app's box (SECRETS_KEY, or the generated key file)."""
    from webapp.secret_box import EXTENSION

    return current_app.extensions[EXTENSION]


def _rewrite(convert):
    """Apply `convert` to every kept answer, row by row (keys expire within a day: few rows)."""
    from alembic import context

    if context.is_offline_mode():
        return  # `--sql` output: there are no rows to rewrite
    bind = op.get_bind()
    table = sa.table('idempotency_keys', sa.column('id'), sa.column('response_body'))
    rows = bind.execute(sa.select(table).where(table.c.response_body.is_not(None))).all()
    for row_id, value in rows:
        converted = convert(value)
        if converted != value:
            bind.execute(table.update().where(table.c.id == row_id).values(response_body=converted))
