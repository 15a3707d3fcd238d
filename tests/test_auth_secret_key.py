"""No known key, ever: without SECRET_KEY a random key is generated once per checkout."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from flask import Flask
from sqlalchemy import select

import webapp
from tests.support import ADMIN
from webapp import create_app
from webapp.config import PROJECT_ROOT
from webapp.extensions import db
from webapp.models import User
from webapp.secret_key import FILE_NAME, UnsafeSecretKey, instance_key

OLD_DEFAULT = "dev-only-change-me"


def forged_session(key: str, data: dict) -> str:
    """A session cookie signed the way Flask signs one, with `key`."""
    forger = Flask("forger")
    forger.secret_key = key
    return forger.session_interface.get_signing_serializer(forger).dumps(data)


@pytest.fixture()
def keyless_app(app, monkeypatch, tmp_path):
    """The test database and Redis, no SECRET_KEY anywhere, instance files in tmp_path."""
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setattr(webapp, "INSTANCE_DIR", tmp_path)
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": app.config["REDIS_URL"],
        }
    )


def test_a_cookie_signed_with_the_old_default_key_opens_nothing(app, keyless_app):
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.email == ADMIN[0]))
        claims = {"_user_id": str(admin.id), "_fresh": True, "_gen": admin.session_generation}
    client = keyless_app.test_client()
    client.set_cookie("session", forged_session(OLD_DEFAULT, claims))
    page = client.get("/admin/webhooks")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    api = client.get("/api/v1/webhook-endpoints")
    assert api.status_code == 401
    assert "whsec_" not in api.get_data(as_text=True)


def test_the_generated_key_is_made_once_private_and_reused(keyless_app, monkeypatch, tmp_path):
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = keyless_app.config["SECRET_KEY"]
    assert key == path.read_text().strip() and len(key) >= 64
    before = path.stat()
    again = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert again.config["SECRET_KEY"] == key
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns


def test_processes_starting_together_agree_on_one_key(tmp_path):
    code = "import sys; from pathlib import Path; from webapp.secret_key import instance_key; "
    code += "print(instance_key(Path(sys.argv[1])))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert keys == {(tmp_path / FILE_NAME).read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no drafts left behind


def test_a_key_file_readable_by_others_is_made_private(tmp_path):
    key = instance_key(tmp_path)
    (tmp_path / FILE_NAME).chmod(0o644)
    assert instance_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600


def test_the_old_default_set_explicitly_is_refused(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", OLD_DEFAULT)
    with pytest.raises(UnsafeSecretKey):
        create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
