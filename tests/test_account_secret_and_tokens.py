"""The account page's limits and controls: the owner rotates their signing secret (confirmed,
audited, the old one signing for 24 hours) and holds at most MAX_API_TOKENS active tokens."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, text

from tests.support import csrf_token, flashes
from webapp import create_app
from webapp.demo import ensure_user
from webapp.extensions import db
from webapp.models import ApiToken, AuditEntry, Role, User
from webapp.services.accounts import REVOKED_SHOWN, TokenLimitReached, issue_token

pytestmark = pytest.mark.db

CAP = 3
PASSWORD = "account-password"


@pytest.fixture(scope="module")
def capped(app):
    """The app on the session's database with MAX_API_TOKENS = 3."""
    site = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
            "SECRET_KEY": app.config["SECRET_KEY"],
            "MAX_API_TOKENS": CAP,
        }
    )
    yield site
    with site.app_context():
        db.engine.dispose()


@pytest.fixture()
def account(capped) -> Iterator[str]:
    """A student of the test's own (tokens and secret untouched by other tests); its email."""
    email = f"account-{secrets.token_hex(4)}@example.com"
    with capped.app_context():
        ensure_user(email, PASSWORD, Role.STUDENT)
        db.session.commit()
    yield email
    with capped.app_context():
        db.session.execute(delete(User).where(User.email == email))
        db.session.commit()


@pytest.fixture()
def browser(capped, account):
    """A test client logged in as `account`; its CSRF token is `browser.csrf`."""
    client = capped.test_client()
    token = csrf_token(client)
    response = client.post(
        "/login", data={"csrf_token": token, "email": account, "password": PASSWORD}
    )
    assert response.status_code == 302
    client.csrf = csrf_token(client, "/account")
    return client


def shown_secret(html: str) -> str:
    return re.search(r'value="(whsec_[^"]+)" data-testid="signing-secret"', html).group(1)


# --- rotating the account's signing secret --------------------------------------------------------


def test_the_owner_rotates_the_signing_secret_after_confirming(browser, capped, account):
    page = browser.get("/account").get_data(as_text=True)
    before = shown_secret(page)
    assert 'data-testid="rotate-signing-secret"' in page
    assert 'data-testid="signing-secret-grace"' not in page

    unconfirmed = browser.post(
        "/account/signing-secret/rotate", data={"csrf_token": browser.csrf}, follow_redirects=True
    )
    assert flashes(unconfirmed) == ["Tick the confirmation to rotate the signing secret."]
    assert shown_secret(unconfirmed.get_data(as_text=True)) == before

    rotated = browser.post(
        "/account/signing-secret/rotate",
        data={"csrf_token": browser.csrf, "confirm": "y"},
        follow_redirects=True,
    )
    html = rotated.get_data(as_text=True)
    [message] = flashes(rotated)
    assert message.startswith("New signing secret created. The previous one also signs until ")
    after = shown_secret(html)
    assert after != before and after.startswith("whsec_")
    assert 'data-testid="signing-secret-grace"' in html
    with capped.app_context():
        user = db.session.scalar(select(User).where(User.email == account))
        assert user.active_signing_secrets() == [after, before]
        raw = db.session.execute(
            text("SELECT signing_secret, previous_signing_secret FROM users WHERE id = :id"),
            {"id": user.id},
        ).one()
        assert not [value for value in raw if "whsec_" in value]
        entry = db.session.scalar(
            select(AuditEntry).where(
                AuditEntry.action == "account.secret_rotated", AuditEntry.actor_id == user.id
            )
        )
        assert entry is not None and entry.entity_id == str(user.id)
        assert before not in str(entry.details) and after not in str(entry.details)


def test_rotation_without_the_csrf_token_changes_nothing(browser, capped, account):
    before = shown_secret(browser.get("/account").get_data(as_text=True))
    response = browser.post(
        "/account/signing-secret/rotate", data={"confirm": "y"}, follow_redirects=True
    )
    assert response.status_code in (200, 400)
    assert shown_secret(browser.get("/account").get_data(as_text=True)) == before


# --- a cap on API tokens ------------------------------------------------------------------------


def create(browser, name: str):
    return browser.post("/account/tokens", data={"csrf_token": browser.csrf, "name": name})


def test_one_token_more_than_the_cap_is_refused_with_a_message(browser, capped, account):
    for number in range(CAP):
        assert create(browser, f"t{number}").status_code == 201
    refused = create(browser, "one too many")
    assert refused.status_code == 409
    assert flashes(refused) == [
        f"An account can hold at most {CAP} active API tokens. "
        "Revoke one you no longer use, then create the new one."
    ]
    assert "one too many" not in refused.get_data(as_text=True).split('data-testid="tokens"')[1]
    assert f"{CAP} of {CAP} active tokens: revoke one to create another" in refused.get_data(
        as_text=True
    )

    with capped.app_context():
        user = db.session.scalar(select(User).where(User.email == account))
        oldest = db.session.scalar(
            select(ApiToken.id).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
        )
    browser.post(f"/account/tokens/{oldest}/revoke", data={"csrf_token": browser.csrf})
    assert create(browser, "after revoking").status_code == 201


def test_the_account_page_stays_small_however_many_tokens_were_revoked(browser, capped, account):
    for number in range(REVOKED_SHOWN + 15):
        create(browser, f"churn-{number}")
        with capped.app_context():
            user = db.session.scalar(select(User).where(User.email == account))
            db.session.execute(
                ApiToken.__table__.update()
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=db.func.now())
            )
            db.session.commit()
    create(browser, "live")
    html = browser.get("/account").get_data(as_text=True)
    rows = re.findall(r'data-testid="token-\d+"', html)
    assert len(rows) == 1 + REVOKED_SHOWN
    assert "churn-24" in html and "churn-0<" not in html  # the newest revoked are the ones shown


def test_the_cli_keeps_the_same_cap(capped, account):
    runner = capped.test_cli_runner()
    for _ in range(CAP):
        assert runner.invoke(args=["create-token", "--email", account]).exit_code == 0
    refused = runner.invoke(args=["create-token", "--email", account])
    assert refused.exit_code != 0
    assert f"at most {CAP} active API tokens" in refused.output


def test_concurrent_creations_never_pass_the_cap(capped, account):
    """Eight requests at once for the last free places: the cap holds on both databases."""
    made, refused, failed = [], [], []
    start = threading.Barrier(8)

    def one() -> None:
        with capped.app_context():
            user = db.session.scalar(select(User).where(User.email == account))
            start.wait()
            try:
                made.append(issue_token(user, "racing")[1])
            except TokenLimitReached:
                refused.append(1)
            except Exception as exc:
                failed.append(repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failed == []
    assert (len(made), len(refused)) == (CAP, 8 - CAP)
