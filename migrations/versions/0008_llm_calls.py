"""llm_calls: token usage of each call to the LLM provider, per stage run and assessment

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 13:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('llm_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage_run_id', sa.Integer(), nullable=False),
    sa.Column('assessment_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('cached_tokens', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assessment_id'], ['assessments.id'], name=op.f('fk_llm_calls_assessment_id_assessments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['stage_run_id'], ['stage_runs.id'], name=op.f('fk_llm_calls_stage_run_id_stage_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_llm_calls'))
    )
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.create_index('ix_llm_calls_created_at', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_llm_calls_assessment_id'), ['assessment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_llm_calls_stage_run_id'), ['stage_run_id'], unique=False)


def downgrade():
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_llm_calls_stage_run_id'))
        batch_op.drop_index(batch_op.f('ix_llm_calls_assessment_id'))
        batch_op.drop_index('ix_llm_calls_created_at')

    op.drop_table('llm_calls')
