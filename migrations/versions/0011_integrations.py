"""integrations: service accounts, their students by external id, scoped tokens, sign-in links

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-01 17:00:00

An integration is a user with role `integration`; the students it creates are users with its
id and their `external_id` (unique per integration) and no email (a contact email, if given,
is not a login and not unique). Tokens get scopes (existing tokens keep every scope) and an
optional expiry. Sign-in links are rows so each can be used once.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("email", existing_type=sa.String(length=255), nullable=True)
        batch_op.add_column(sa.Column("name", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("integration_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("external_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("contact_email", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_users_integration_id_users"),
            "users",
            ["integration_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_users_integration_id"), ["integration_id"])
        batch_op.create_unique_constraint(
            batch_op.f("uq_users_integration_id"), ["integration_id", "external_id"]
        )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "scopes",
                sa.String(length=64),
                nullable=False,
                server_default="read write webhooks",
            )
        )
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "sign_in_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("assessment_id", sa.Integer(), nullable=False),
        sa.Column("issued_by_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["assessment_id"],
            ["assessments.id"],
            name=op.f("fk_sign_in_links_assessment_id_assessments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["issued_by_id"],
            ["users.id"],
            name=op.f("fk_sign_in_links_issued_by_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["users.id"],
            name=op.f("fk_sign_in_links_student_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_links")),
    )
    op.create_index(
        "ix_sign_in_links_issued_by_created", "sign_in_links", ["issued_by_id", "created_at"]
    )


def downgrade():
    op.drop_index("ix_sign_in_links_issued_by_created", table_name="sign_in_links")
    op.drop_table("sign_in_links")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scopes")
    # Students without an email cannot stay once email is required again.
    op.execute("DELETE FROM users WHERE email IS NULL")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_integration_id"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_users_integration_id"))
        batch_op.drop_constraint(batch_op.f("fk_users_integration_id_users"), type_="foreignkey")
        batch_op.drop_column("contact_email")
        batch_op.drop_column("external_id")
        batch_op.drop_column("integration_id")
        batch_op.drop_column("name")
        batch_op.alter_column("email", existing_type=sa.String(length=255), nullable=False)
