"""signing secrets sealed at rest; an account's previous secret for its rotation grace

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:45:00

Every webhook endpoint secret (current and previous) and account signing secret is encrypted
with the app's SECRETS_KEY (webapp.secret_box: Fernet, newest key seals); the downgrade opens
them again. Both need the key the app runs with, so run them through `flask db ...`.
"""
from alembic import op
import sqlalchemy as sa
from flask import current_app


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

SEALED = 255  # a Fernet token of a 50-character secret is 164 characters
PLAIN = 64

# (table, columns holding a signing secret)
SECRET_COLUMNS = (
    ('users', ('signing_secret', 'previous_signing_secret')),
    ('webhook_endpoints', ('secret', 'previous_secret')),
)


def upgrade():
    with op.batch_alter_table('users') as batch:
        batch.alter_column('signing_secret', existing_type=sa.String(PLAIN),
                           type_=sa.String(SEALED), existing_nullable=False)
        batch.add_column(sa.Column('previous_signing_secret', sa.String(SEALED), nullable=True))
        batch.add_column(sa.Column('previous_signing_secret_expires_at',
                                   sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.alter_column('secret', existing_type=sa.String(PLAIN),
                           type_=sa.String(SEALED), existing_nullable=False)
        batch.alter_column('previous_secret', existing_type=sa.String(PLAIN),
                           type_=sa.String(SEALED), existing_nullable=True)
    box = _box()
    # Only plaintext is sealed: a row already sealed (say, an upgrade run twice) is left alone.
    _rewrite(lambda value: box.seal(value) if value.startswith('whsec_') else value)


def downgrade():
    box = _box()
    _rewrite(lambda value: value if value.startswith('whsec_') else box.open(value))
    with op.batch_alter_table('webhook_endpoints') as batch:
        batch.alter_column('previous_secret', existing_type=sa.String(SEALED),
                           type_=sa.String(PLAIN), existing_nullable=True)
        batch.alter_column('secret', existing_type=sa.String(SEALED),
                           type_=sa.String(PLAIN), existing_nullable=False)
    with op.batch_alter_table('users') as batch:
        batch.drop_column('previous_signing_secret_expires_at')
        batch.drop_column('previous_signing_secret')
        batch.alter_column('signing_secret', existing_type=sa.String(SEALED),
                           type_=sa.String(PLAIN), existing_nullable=False)


def _box():
    """The running app's box (SECRETS_KEY, or the generated key file)."""
    from webapp.secret_box import EXTENSION

    return current_app.extensions[EXTENSION]


def _rewrite(convert):
    """Apply `convert` to every secret value, row by row (secrets are few: one per account)."""
    if context_is_offline():
        return  # `--sql` output: there are no rows to rewrite
    bind = op.get_bind()
    for table_name, columns in SECRET_COLUMNS:
        table = sa.table(table_name, sa.column('id'), *(sa.column(c) for c in columns))
        for row in bind.execute(sa.select(table)).mappings().all():
            changes = {c: convert(row[c]) for c in columns if row[c] is not None}
            changes = {c: v for c, v in changes.items() if v != row[c]}
            if changes:
                bind.execute(table.update().where(table.c.id == row['id']).values(**changes))


def context_is_offline():
    """True when Alembic writes SQL instead of running it."""
    from alembic import context

    return context.is_offline_mode()
