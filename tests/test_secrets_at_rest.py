"""Signing secrets at rest: sealed with SECRETS_KEY in the database, opened only to sign and to
show their owner; the key rotates without losing a row, and a wrong key signs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from tests.support import (
    ADMIN,
    ASSESSMENT_EVENTS,
    STUDENT,
    WEBHOOK_TEST_ENV,
    add_endpoint,
    full_answers,
    log_in,
    start_worker,
)
from webapp import create_app, secret_box
from webapp.config import PROJECT_ROOT, Config
from webapp.extensions import db
from webapp.models import User, WebhookEndpoint
from webapp.models.base import utcnow
from webapp.models.idempotency import IdempotencyKey
from webapp.secret_box import KEY_FILE, SecretBox, SecretsKeyError, box, key_file_keys, parse_keys
from webapp.services.accounts import rotate_signing_secret
from webapp.services.webhooks.recovery import requeue_lost

pytestmark = pytest.mark.db

MIGRATION = "0007"  # the one that seals; its predecessor is read from the script directory


def new_key() -> str:
    """A fresh Fernet key."""
    return Fernet.generate_key().decode()


def raw_secrets(engine) -> list[str]:
    """Every secret column value exactly as the database holds it."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT signing_secret, previous_signing_secret FROM users "
                "UNION ALL SELECT secret, previous_secret FROM webhook_endpoints"
            )
        ).all()
    return [value for row in rows for value in row if value is not None]


# --- a database of the test's own, for migrations and key changes -------------------------------


@pytest.fixture()
def fresh_db_url(db_url, tmp_path) -> Iterator[str]:
    """An empty database beside the session's: a SQLite file, or a new PostgreSQL database."""
    if not db_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = make_url(db_url)
    name = f"{url.database}_secrets_fresh"
    server = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture()
def app_on(fresh_db_url, redis_url) -> Iterator[Callable[[str], object]]:
    """app_on(keys): an app on the fresh database whose SECRETS_KEY is `keys`."""
    made = []

    def make(keys: str):
        made.append(
            create_app(
                {
                    "TESTING": True,
                    "SQLALCHEMY_DATABASE_URI": fresh_db_url,
                    "REDIS_URL": redis_url,
                    "SECRET_KEY": "test-secret",
                    "SECRETS_KEY": keys,
                }
            )
        )
        return made[-1]

    yield make
    for each in made:
        with each.app_context():
            db.engine.dispose()


def migration_predecessor() -> str:
    """The revision the sealing migration follows (whatever the chain looks like after merges)."""
    from alembic.script import ScriptDirectory
    from flask import current_app

    config = current_app.extensions["migrate"].migrate.get_config()
    return ScriptDirectory.from_config(config).get_revision(MIGRATION).down_revision


# --- the database holds no plaintext ------------------------------------------------------------


def test_the_database_holds_no_plaintext_secret(app, site_client, tokens):
    admin = site_client(tokens["admin"])
    endpoint = add_endpoint(admin, "https://hooks.example.com/in")
    rotated = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").get_json()

    with app.app_context():
        values = raw_secrets(db.engine)
        assert values and not [v for v in values if "whsec_" in v]
        opened = {box().open(v) for v in values}
        row = db.session.get(WebhookEndpoint, endpoint["id"])
        assert (row.secret, row.previous_secret) == (rotated["secret"], endpoint["secret"])
    # The API still shows the admin the secret itself.
    assert {rotated["secret"], endpoint["secret"]} <= opened
    assert (
        admin.get(f"/api/v1/webhook-endpoints/{endpoint['id']}").get_json()["secret"]
        == (rotated["secret"])
    )


def stored_responses(engine) -> list[str]:
    """Every answer kept for an idempotency key, exactly as the database holds it."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT response_body FROM idempotency_keys")).scalars()
        return [value for value in rows if value is not None]


def test_answers_kept_for_idempotency_keys_hold_no_plaintext_secret(app, site_client, tokens):
    """A new endpoint, a rotation and a callback registration show a signing secret; sent with
    an Idempotency-Key, their answers are kept to replay: sealed, and replayed whole."""
    admin, student = site_client(tokens["admin"]), site_client(tokens["student"])
    endpoint = add_endpoint(admin, "https://hooks.example.com/replayed")
    assessment = student.post("/api/v1/assessments", json={"question_set": "web-apis"})
    requests = [
        (admin, f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", None),
        (admin, "/api/v1/webhook-endpoints", {"url": "https://hooks.example.com/kept"}),
        (
            student,
            f"/api/v1/assessments/{assessment.get_json()['id']}/webhook",
            {"webhook_url": "https://hooks.example.com/callback"},
        ),
    ]
    firsts = []
    for number, (client, path, body) in enumerate(requests):
        headers = {"Idempotency-Key": f"kept-secret-{number}-{time.time_ns()}"}
        first = client.post(path, json=body, headers=headers)
        replay = client.post(path, json=body, headers=headers)
        assert first.status_code in (200, 201), first.get_json()
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.get_json() == first.get_json()
        firsts.append(first.get_json())

    shown = [firsts[0]["secret"], firsts[1]["secret"], firsts[2]["signing_secret"]]
    assert all(secret.startswith("whsec_") for secret in shown)
    with app.app_context():
        kept = stored_responses(db.engine)
    assert kept and not [body for body in kept if "whsec_" in body]
    for made in (endpoint, firsts[1]):  # later tests' workers must not try them
        assert admin.delete(f"/api/v1/webhook-endpoints/{made['id']}").status_code == 204


@pytest.fixture()
def site_client(app):
    """site_client(token): a test client of the session app sending that bearer token."""

    def make(token: str):
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client

    return make


# --- signing, byte for byte as before -----------------------------------------------------------


def test_deliveries_after_rotations_verify_with_standardwebhooks(webhook_site, receivers, tokens):
    """An endpoint's and an account's secret, both rotated: every delivery carries a signature
    by the new secret and one by the old, each checked by the `standardwebhooks` library."""
    hook, callback = receivers(), receivers()
    site = webhook_site()
    admin, student = site.client(tokens["admin"]), site.client(tokens["student"])
    endpoint = add_endpoint(admin, hook.url, event_types=["assessment.completed"])
    rotated = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").get_json()
    with site.app.app_context():
        user = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        old = user.signing_secret
        new = rotate_signing_secret(user).signing_secret

    assessment = student.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assessment = assessment.get_json()
    registered = student.post(
        f"/api/v1/assessments/{assessment['id']}/webhook", json={"webhook_url": callback.url}
    ).get_json()
    assert registered["signing_secret"] == new != old
    student.post(
        f"/api/v1/assessments/{assessment['id']}/submit",
        json={"responses": full_answers(assessment)},
    )

    callback.wait_for(len(ASSESSMENT_EVENTS))
    hook.wait_for(1)
    for receiver, secrets in (
        (callback, (new, old)),
        (hook, (rotated["secret"], endpoint["secret"])),
    ):
        assert {len(request.signatures) for request in receiver.received} == {2}
        for secret in secrets:
            assert receiver.verified(secret)
    assert sorted(p["type"] for p in callback.verified(new)) == sorted(ASSESSMENT_EVENTS)


# --- the migration seals what was there, and its downgrade opens it -----------------------------


def test_the_migration_seals_existing_plaintext_and_the_downgrade_opens_it(app_on):
    keys = new_key()
    site = app_on(keys)
    plain_user, plain_endpoint, plain_previous = (
        "whsec_" + "u" * 43 + "=",
        "whsec_" + "e" * 43 + "=",
        "whsec_" + "p" * 43 + "=",
    )
    with site.app_context():
        before = migration_predecessor()
        upgrade(revision=before)
        now = utcnow()
        users = sa.table("users", *(sa.column(c, t) for c, t in USER_COLUMNS.items()))
        endpoints = sa.table(
            "webhook_endpoints", *(sa.column(c, t) for c, t in ENDPOINT_COLUMNS.items())
        )
        with db.engine.begin() as connection:
            connection.execute(
                users.insert().values(
                    email="old@example.com", password_hash="x", role="student",
                    signing_secret=plain_user, created_at=now,
                )
            )  # fmt: skip
            connection.execute(
                endpoints.insert().values(
                    url="https://hooks.example.com/old", description="", event_types=[],
                    enabled=True, secret=plain_endpoint, previous_secret=plain_previous,
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip

        upgrade(revision=MIGRATION)
        sealed = raw_secrets(db.engine)
        assert len(sealed) == 3 and not [v for v in sealed if v.startswith("whsec_")]
        upgrade()  # the models read today's columns: the later migrations keep the sealed values
        user = db.session.scalar(select(User).where(User.email == "old@example.com"))
        endpoint = db.session.scalar(select(WebhookEndpoint))
        assert user.signing_secret == plain_user and user.active_signing_secrets() == [plain_user]
        assert (endpoint.secret, endpoint.previous_secret) == (plain_endpoint, plain_previous)
        db.session.rollback()

        downgrade(revision=before)
        with db.engine.connect() as connection:
            opened = connection.execute(
                text(
                    "SELECT signing_secret FROM users UNION ALL "
                    "SELECT secret || ' ' || previous_secret FROM webhook_endpoints"
                )
            ).scalars()
            assert sorted(opened) == sorted([plain_user, f"{plain_endpoint} {plain_previous}"])


def kept_answer(user: User | int, body: str) -> IdempotencyKey:
    """A finished idempotency key of `user` (a new one is flushed here) whose kept answer is
    `body`."""
    if isinstance(user, User):
        db.session.add(user)
        db.session.flush()
        user = user.id
    now = utcnow()
    return IdempotencyKey(
        user_id=user, key=f"kept-{time.time_ns()}", fingerprint="f", method="POST", path="/x",
        lock_token="t", status_code=201, response_body=body, expires_at=now + timedelta(days=1),
    )  # fmt: skip


def test_migration_0009_seals_kept_answers_and_its_downgrade_opens_them(app_on):
    answer = '{"secret": "whsec_' + "k" * 43 + '="}'
    site = app_on(new_key())
    with site.app_context():
        upgrade(revision="0007")
        users = sa.table("users", *(sa.column(c, t) for c, t in USER_COLUMNS.items()))
        with db.engine.begin() as connection:  # the users table as it was at 0007
            connection.execute(
                users.insert().values(
                    email="kept@example.com", password_hash="x", role="student",
                    signing_secret="sealed-elsewhere", created_at=utcnow(),
                )
            )  # fmt: skip
        user_id = db.session.scalar(text("SELECT id FROM users WHERE email = 'kept@example.com'"))
        db.session.add(kept_answer(user_id, "-"))
        db.session.commit()
        with db.engine.begin() as connection:  # kept before 0009: in plaintext
            plain = text("UPDATE idempotency_keys SET response_body = :answer")
            connection.execute(plain, {"answer": answer})

        upgrade(revision="0009")
        assert stored_responses(db.engine) != [answer]
        assert db.session.scalar(select(IdempotencyKey)).response_body == answer
        db.session.rollback()
        upgrade(revision="0009")  # again: nothing sealed twice
        assert db.session.scalar(select(IdempotencyKey)).response_body == answer
        db.session.rollback()

        downgrade(revision="0007")
        assert stored_responses(db.engine) == [answer]


def test_rotate_secrets_key_reseals_kept_answers_so_they_replay_after_the_old_key_goes(app_on):
    old, new = new_key(), new_key()
    answer = '{"secret": "whsec_' + "r" * 43 + '="}'
    with app_on(old).app_context():
        upgrade()
        user = User(email="rekeyed@example.com", password_hash="x")
        db.session.add(kept_answer(user, answer))
        db.session.commit()

    both = app_on(f"{new},{old}")
    with both.app_context():
        result = both.test_cli_runner().invoke(args=["rotate-secrets-key"])
        assert result.exit_code == 0, result.output
        assert "re-encrypted 2 secret(s)" in result.output  # the account's and the answer

    with app_on(new).app_context():
        assert db.session.scalar(select(IdempotencyKey)).response_body == answer


# The columns as they were before the migration, typed so each value binds on both databases.
USER_COLUMNS = {
    "email": sa.String(), "password_hash": sa.String(), "role": sa.String(),
    "signing_secret": sa.String(), "created_at": sa.DateTime(timezone=True),
}  # fmt: skip
ENDPOINT_COLUMNS = {
    "url": sa.String(), "description": sa.String(), "event_types": sa.JSON(),
    "enabled": sa.Boolean(), "secret": sa.String(), "previous_secret": sa.String(),
    "created_at": sa.DateTime(timezone=True), "updated_at": sa.DateTime(timezone=True),
}  # fmt: skip


# --- rotating the encryption key ----------------------------------------------------------------


def test_a_new_key_reads_old_rows_and_rotate_secrets_key_reseals_them(app_on):
    old, new = new_key(), new_key()
    first = app_on(old)
    with first.app_context():
        upgrade()
        user = User(email="keyed@example.com", password_hash="x")
        endpoint = WebhookEndpoint(url="https://hooks.example.com/keyed")
        db.session.add_all([user, endpoint])
        db.session.commit()
        plain = (user.signing_secret, endpoint.secret)

    both = app_on(f"{new},{old}")  # the new key first: it seals, both open
    with both.app_context():
        user = db.session.scalar(select(User))
        assert (user.signing_secret, db.session.scalar(select(WebhookEndpoint)).secret) == plain
        db.session.rollback()
        result = both.test_cli_runner().invoke(args=["rotate-secrets-key"])
        assert result.exit_code == 0, result.output
        assert "re-encrypted 2 secret(s); 0 already used the newest key" in result.output
        only_new = Fernet(new.encode())
        assert sorted(only_new.decrypt(v).decode() for v in raw_secrets(db.engine)) == sorted(plain)
        again = both.test_cli_runner().invoke(args=["rotate-secrets-key"])
        assert "re-encrypted 0 secret(s); 2 already used the newest key" in again.output

    retired = app_on(new)  # the old key is gone now, and nothing needed it
    with retired.app_context():
        endpoint = db.session.scalar(select(WebhookEndpoint))
        assert endpoint.secret == plain[1]


def test_rotate_secrets_key_never_overwrites_a_secret_rotated_meanwhile(app_on):
    """An admin rotates the endpoint's secret (in another process, still on the old key) between
    the command's read and its write: the command reads the row again and keeps the new secret."""
    old, new = new_key(), new_key()
    with app_on(old).app_context():
        upgrade()
        db.session.add(WebhookEndpoint(url="https://hooks.example.com/busy"))
        db.session.commit()
    rotated_meanwhile = Fernet(old.encode()).encrypt(b"whsec_rotated-meanwhile").decode()

    both = app_on(f"{new},{old}")
    with both.app_context():
        fired = []

        def rotate_first(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith("UPDATE webhook_endpoints") and not fired:
                fired.append(statement)
                with db.engine.connect() as other, other.begin():
                    other.execute(
                        text("UPDATE webhook_endpoints SET secret = :s"), {"s": rotated_meanwhile}
                    )

        sa.event.listen(db.engine, "before_cursor_execute", rotate_first)
        try:
            result = both.test_cli_runner().invoke(args=["rotate-secrets-key"])
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", rotate_first)
        assert fired and result.exit_code == 0, result.output
        assert "re-encrypted 1 secret(s)" in result.output
        [sealed] = raw_secrets(db.engine)
        assert Fernet(new.encode()).decrypt(sealed) == b"whsec_rotated-meanwhile"


def test_rotate_secrets_key_without_the_old_key_changes_nothing_and_says_why(app_on):
    old = new_key()
    with app_on(old).app_context():
        upgrade()
        db.session.add(User(email="stranded@example.com", password_hash="x"))
        db.session.commit()
        before = raw_secrets(db.engine)

    lost = app_on(new_key())  # the old key was dropped before rotating: a mistake
    with lost.app_context():
        result = lost.test_cli_runner().invoke(args=["rotate-secrets-key"])
        assert result.exit_code != 0
        assert "No key in SECRETS_KEY opens users.signing_secret of id" in result.output
        assert "nothing was re-encrypted" in result.output
        assert raw_secrets(db.engine) == before


# --- a wrong key ----------------------------------------------------------------------------------


def test_a_wrong_key_is_a_clear_error_in_the_api_the_pages_and_readyz(app, tokens, redis_url):
    admin = app.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    endpoint = add_endpoint(admin, "https://hooks.example.com/wrong-key")
    wrong = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": redis_url,
            "SECRET_KEY": "test-secret",
            "SECRETS_KEY": new_key(),
        }
    )
    response = wrong.test_client().get(
        f"/api/v1/webhook-endpoints/{endpoint['id']}",
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["code"] == "SECRETS_KEY_MISMATCH"
    assert "SECRETS_KEY" in problem["detail"] and "whsec_" not in response.get_data(as_text=True)
    browser = wrong.test_client()
    log_in(browser, ADMIN)
    page = browser.get(f"/admin/webhooks/{endpoint['id']}")
    assert page.status_code == 500 and "cannot be decrypted" in page.get_data(as_text=True)
    ready = wrong.test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["secrets"] == {
        "ok": False,
        "reason": "stored signing secrets cannot be decrypted with SECRETS_KEY",
    }
    assert app.test_client().get("/readyz").get_json()["checks"]["secrets"] == {"ok": True}
    with wrong.app_context():
        db.engine.dispose()


def test_a_worker_with_a_wrong_key_sends_nothing_then_the_right_key_delivers_it(
    webhook_site, receivers, tokens, base_dir, db_url
):
    receiver = receivers()
    site = webhook_site(SECRETS_KEY=new_key())  # the worker's key is not the site's
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url)
    sent = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test").get_json()

    [wrong] = site.workers
    deadline = time.monotonic() + 20
    while "cannot be decrypted with any key in SECRETS_KEY" not in wrong.log():
        assert time.monotonic() < deadline, wrong.log()
        time.sleep(0.2)
    time.sleep(0.5)
    assert receiver.received == []  # no request at all, so no garbage signature either
    delivery = admin.get(f"/api/v1/webhook-deliveries/{sent['id']}").get_json()
    assert delivery["attempt_count"] == 0 and delivery["status"] == "pending"

    # The key is put right: the watchdog's pass sends the waiting delivery, correctly signed.
    wrong.stop()
    right = start_worker(base_dir, db_url, site.redis_url, **WEBHOOK_TEST_ENV)
    try:
        with site.app.app_context():
            assert requeue_lost(grace=timedelta(0)) == 1
        [request] = receiver.wait_for(1)
        assert request.verify(endpoint["secret"])["type"] == "webhook.test"
    finally:
        right.stop()


# --- the key itself -------------------------------------------------------------------------------


def test_without_secrets_key_one_key_is_generated_once_into_instance_mode_0600(tmp_path):
    """Web and worker start at once on `make run`: all of them end up with the same one key."""
    instance = tmp_path / "instance"
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: key_file_keys(instance), range(16)))
    assert len({tuple(keys) for keys in found}) == 1 and len(found[0]) == 1
    key_file = instance / KEY_FILE
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in instance.iterdir()] == [KEY_FILE]  # no drafts left behind

    apps = [Flask(__name__, instance_path=str(instance)) for _ in range(2)]
    for each in apps:
        each.config["SECRETS_KEY"] = ""  # unset: the key file is used
        secret_box.init_app(each)
    with apps[0].app_context():
        sealed = box().seal("whsec_same")
    with apps[1].app_context():
        assert box().open(sealed) == "whsec_same"
    assert Fernet(found[0][0].encode()).decrypt(sealed) == b"whsec_same"


def test_a_garbled_key_file_stops_the_app_and_names_the_file(tmp_path):
    (tmp_path / KEY_FILE).write_text("garbled\n")
    bare = Flask(__name__, instance_path=str(tmp_path))
    bare.config["SECRETS_KEY"] = ""
    with pytest.raises(RuntimeError, match=f"{tmp_path / KEY_FILE}: key 1 of 1 is not a Fernet"):
        secret_box.init_app(bare)


def test_a_process_that_only_serves_polls_never_loads_the_cipher(tmp_path):
    """`cryptography`'s bindings map ~10 MB; a web process pays for them only once it needs a
    secret (the memory benchmark's web process never does)."""
    script = (
        "import sys\n"
        "from webapp import create_app\n"
        f"app = create_app({{'SQLALCHEMY_DATABASE_URI': 'sqlite:///{tmp_path / 'x.db'}'}})\n"
        "app.test_client().get('/healthz')\n"
        "print('cryptography.fernet' in sys.modules)\n"
    )
    env = {**os.environ, "SCORELINE_INSTANCE": str(tmp_path)}
    loaded = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert loaded.stdout.strip() == "False", loaded.stderr


def test_the_default_secrets_key_is_empty_so_no_constant_key_exists(monkeypatch):
    monkeypatch.delenv("SECRETS_KEY")
    assert Config().SECRETS_KEY == ""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not-a-key", "key 1 of 1 is not a Fernet key"),
        (f"{Fernet.generate_key().decode()},short", "key 2 of 2 is not a Fernet key"),
        (" , ", "SECRETS_KEY is empty"),
    ],
)
def test_a_malformed_secrets_key_stops_the_app_at_start(raw, message):
    with pytest.raises(RuntimeError, match=message):
        SecretBox(parse_keys(raw))


def test_sealing_is_authenticated_so_a_tampered_row_is_refused_not_misread():
    sealer = SecretBox([new_key()])
    sealed = sealer.seal("whsec_abc")
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SecretsKeyError):
        sealer.open(tampered)
