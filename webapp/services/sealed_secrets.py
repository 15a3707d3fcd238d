"""The signing secrets stored sealed: does SECRETS_KEY open them (readiness), and re-sealing
them all with its newest key (key rotation).

Re-sealing is safe beside running web and worker processes: each row is rewritten only if it
still holds the value read (compare and set), so a secret rotated meanwhile is read again, never
overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Column, select, update

from webapp.extensions import db
from webapp.models import User, WebhookEndpoint
from webapp.models.idempotency import IdempotencyKey
from webapp.secret_box import SecretsKeyError, box

# Every column that holds a sealed secret, and the kept answers that may show one.
SEALED_COLUMNS: tuple[Column, ...] = (
    User.__table__.c.signing_secret,
    User.__table__.c.previous_signing_secret,
    WebhookEndpoint.__table__.c.secret,
    WebhookEndpoint.__table__.c.previous_secret,
    IdempotencyKey.__table__.c.response_body,
)
MAX_PASSES = 5  # a row that keeps changing under us is read again, a few times


@dataclass
class RekeyReport:
    """What a rekey did: secrets re-sealed, secrets already under the newest key."""

    resealed: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"re-encrypted {self.resealed} secret(s); {self.current} already used the newest key"


def newest_sealed_secrets_open() -> None:
    """Open the newest value of each sealed column: SecretsKeyError when the key does not fit."""
    sealer = box()
    for column in SEALED_COLUMNS:
        key = column.table.c.id
        newest = db.session.scalar(
            select(column).where(column.is_not(None)).order_by(key.desc()).limit(1)
        )
        if newest is not None:
            sealer.open(newest)


def rekey_all() -> RekeyReport:
    """Re-seal every secret the newest key cannot open yet; all or nothing.

    SecretsKeyError (nothing written) when some secret opens with no key, naming where.
    """
    report = RekeyReport()
    for column in SEALED_COLUMNS:
        _rekey_column(column, report)
    if report.unreadable:
        db.session.rollback()
        raise SecretsKeyError(
            "No key in SECRETS_KEY opens " + ", ".join(report.unreadable) + "; nothing was "
            "re-encrypted. Put the key these were sealed with back in SECRETS_KEY (after the "
            "newest) and run this again."
        )
    db.session.commit()
    return report


def _rekey_column(column: Column, report: RekeyReport) -> None:
    """Re-seal one column's values, row by row, each only if unchanged since it was read."""
    sealer = box()
    table, key = column.table, column.table.c.id
    pending = None  # the ids still to do (None: all rows)
    for _ in range(MAX_PASSES):
        query = select(key, column).where(column.is_not(None))
        if pending is not None:
            query = query.where(key.in_(pending))
        changed = []
        for row_id, sealed in db.session.execute(query).all():
            if sealer.is_current(sealed):
                report.current += 1
                continue
            try:
                fresh = sealer.reseal(sealed)
            except SecretsKeyError:
                report.unreadable.append(f"{table.name}.{column.name} of id {row_id}")
                continue
            result = db.session.execute(
                update(table).where(key == row_id, column == sealed).values({column.name: fresh})
            )
            if result.rowcount == 1:
                report.resealed += 1
            else:
                changed.append(row_id)  # rotated meanwhile: read it again
        if not changed:
            return
        pending = changed
    raise RuntimeError(f"{table.name}.{column.name}: rows {pending} kept changing; run again")
