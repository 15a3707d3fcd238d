"""`flask --app wsgi ...` commands: seed-demo, create-user, create-token, prune, reconcile,
rotate-secrets-key."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from webapp.demo import DEMO_ADMIN, DEMO_STUDENT, seed_demo
from webapp.errors import ScorelineError
from webapp.extensions import db
from webapp.models import Role, User
from webapp.secret_box import SecretsKeyError
from webapp.services import retention, watchdog
from webapp.services.accounts import issue_token
from webapp.services.sealed_secrets import rekey_all


def init_app(app: Flask) -> None:
    """Register the commands."""
    app.cli.add_command(seed_demo_command)
    app.cli.add_command(create_user_command)
    app.cli.add_command(create_token_command)
    app.cli.add_command(prune_command)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(rotate_secrets_key_command)


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Create the demo accounts and question sets (idempotent)."""
    for line in seed_demo() or ["demo data already present"]:
        click.echo(line)
    click.echo(f"admin:   {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]}")
    click.echo(f"student: {DEMO_STUDENT[0]} / {DEMO_STUDENT[1]}")


@click.command("create-user")
@with_appcontext
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.STUDENT.value)
def create_user_command(email: str, password: str, role: str) -> None:
    """Create an account."""
    if db.session.scalar(select(User).where(User.email == email)):
        raise click.ClickException(f"a user with email {email} already exists")
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    user = User(email=email, role=Role(role))
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"created {role} {email}")


@click.command("create-token")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", default="cli")
def create_token_command(email: str, name: str) -> None:
    """Create an API token for an account; the token alone is printed on the last line."""
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    try:  # the same rules as the account page: name length, MAX_API_TOKENS
        _, plain = issue_token(user, name)
    except ScorelineError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"token for {email} (shown once):", err=True)
    click.echo(plain)


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Apply retention: history capped per assessment and by age, expired idempotency keys."""
    report = retention.prune()
    click.echo(f"pruned {report}")


@click.command("reconcile")
@with_appcontext
def reconcile_command() -> None:
    """Re-enqueue scoring work whose job vanished, died or was never enqueued (the watchdog)."""
    report = watchdog.reconcile()
    click.echo(str(report))
    if report.redis_down:
        raise click.ClickException("Redis is unreachable")


@click.command("rotate-secrets-key")
@with_appcontext
def rotate_secrets_key_command() -> None:
    """Re-encrypt every stored signing secret with the newest key of SECRETS_KEY."""
    try:
        report = rekey_all()
    except SecretsKeyError as exc:  # nothing was written; the message says which key is missing
        raise click.ClickException(exc.detail) from exc
    click.echo(str(report))
