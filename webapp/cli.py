"""`flask --app wsgi ...` commands: seed-demo, create-user, create-integration, create-token,
prune, reconcile, rotate-secrets-key."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from webapp.demo import DEMO_ADMIN, DEMO_STUDENT, seed_demo
from webapp.errors import ScorelineError
from webapp.extensions import db
from webapp.models import Role, Scope, User
from webapp.secret_box import SecretsKeyError
from webapp.services import retention, watchdog
from webapp.services.integrations import create_integration, issue_scoped_token, parse_scopes
from webapp.services.sealed_secrets import rekey_all


def init_app(app: Flask) -> None:
    """Register the commands."""
    app.cli.add_command(seed_demo_command)
    app.cli.add_command(create_user_command)
    app.cli.add_command(create_token_command)
    app.cli.add_command(create_integration_command)
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
@click.option(
    "--role",
    type=click.Choice([Role.STUDENT.value, Role.ADMIN.value]),
    default=Role.STUDENT.value,
    help="Integrations: see create-integration.",
)
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


SCOPES_HELP = f"comma-separated, of {','.join(Scope)} (default: all)"


@click.command("create-token")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", default="cli")
@click.option("--scopes", default=",".join(Scope), help=SCOPES_HELP)
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def create_token_command(email: str, name: str, scopes: str, expires_in_days: int | None) -> None:
    """Create an API token for an account; the token alone is printed on the last line."""
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    try:  # the same rules as the account and admin pages: name, scopes, MAX_API_TOKENS
        chosen = parse_scopes([s.strip() for s in scopes.split(",") if s.strip()])
        _, plain = issue_scoped_token(user, name, chosen, expires_in_days, actor=None)
    except ScorelineError as exc:
        raise click.ClickException(_problems(exc)) from exc
    click.echo(f"token for {email} (shown once):", err=True)
    click.echo(plain)


@click.command("create-integration")
@with_appcontext
@click.option("--name", required=True, help="What admins call it, e.g. 'Moodle (north campus)'.")
@click.option("--email", required=True, help="A contact address; it is never a login.")
@click.option("--scopes", default=",".join(Scope), help=SCOPES_HELP)
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def create_integration_command(
    name: str, email: str, scopes: str, expires_in_days: int | None
) -> None:
    """Create an integration account and its first token (printed alone on the last line)."""
    try:
        chosen = parse_scopes([s.strip() for s in scopes.split(",") if s.strip()])
        integration = create_integration(name, email, actor=None)
        _, plain = issue_scoped_token(integration, "cli", chosen, expires_in_days, actor=None)
    except ScorelineError as exc:
        raise click.ClickException(_problems(exc)) from exc
    click.echo(f"created integration {integration.id} {name!r} <{integration.email}>", err=True)
    click.echo(f"token with scopes {' '.join(chosen)} (shown once):", err=True)
    click.echo(plain)


def _problems(exc: ScorelineError) -> str:
    """A refusal in one line, naming each field problem."""
    fields = "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors or [])
    return f"{exc.detail} {fields}".strip()


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
