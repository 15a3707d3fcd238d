"""The CLI: seed-demo, create-user, create-token."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import QuestionSet, User

pytestmark = pytest.mark.db


def test_seed_demo_is_idempotent(app, runner):
    first = runner.invoke(args=["seed-demo"])
    second = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0 and second.exit_code == 0
    assert "student@example.com / student-password" in second.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(QuestionSet)) == 2
        emails = db.session.scalars(select(User.email)).all()
        assert emails.count("student@example.com") == 1


def test_create_user_then_duplicate_is_refused(app, runner):
    ok = runner.invoke(
        args=[
            "create-user",
            "--email",
            "new@example.com",
            "--password",
            "long-enough",
            "--role",
            "admin",
        ]
    )
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(
        args=["create-user", "--email", "new@example.com", "--password", "long-enough"]
    )
    assert again.exit_code != 0
    assert "already exists" in again.output
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "new@example.com"))
        assert user.role == "admin" and user.check_password("long-enough")
        db.session.delete(user)
        db.session.commit()


def test_create_user_refuses_short_password(runner):
    result = runner.invoke(args=["create-user", "--email", "x@example.com", "--password", "short"])
    assert result.exit_code != 0


def test_create_token_prints_a_working_token_on_its_last_line(runner, client):
    result = runner.invoke(args=["create-token", "--email", "student@example.com"])
    assert result.exit_code == 0
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("sl_")
    response = client.get("/api/v1/assessments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_create_token_for_unknown_user_fails(runner):
    result = runner.invoke(args=["create-token", "--email", "ghost@example.com"])
    assert result.exit_code != 0
