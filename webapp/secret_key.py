"""The key that signs sessions and CSRF tokens: SECRET_KEY, or one generated per checkout.

A constant default would let anyone sign an admin session. So when SECRET_KEY is unset the first
process to start writes 64 random bytes to `instance/secret_key` (mode 0600) and every process of
the checkout (web, worker, each gunicorn worker) reads the same file. Several hosts must share one
key: set SECRET_KEY.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "secret_key"
# Keys this project once shipped as defaults: signing with one of them must open nothing.
KNOWN_KEYS = frozenset({"dev-only-change-me"})


class UnsafeSecretKey(RuntimeError):
    """SECRET_KEY is set to a value that is public knowledge."""


def resolve(configured: str | None, instance_dir: Path) -> str:
    """The configured key, refusing known public ones, or the checkout's generated key."""
    if configured:
        if configured in KNOWN_KEYS:
            raise UnsafeSecretKey(
                "SECRET_KEY is a published default; set a random one "
                '(python -c "import secrets; print(secrets.token_urlsafe(64))") or unset it'
            )
        return configured
    return instance_key(instance_dir)


def instance_key(instance_dir: Path) -> str:
    """Read `instance_dir/secret_key`, creating it (0600, random) if it does not exist yet."""
    return instance_secret(instance_dir / FILE_NAME, lambda: secrets.token_urlsafe(64))


def instance_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret kept in `path` (mode 0600), written from `generate()` the first time."""
    if not path.exists():
        _create(path, generate)
    _tighten(path)
    for _ in range(50):  # another process may have linked it a moment ago: it is complete
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty; delete it to have a new one generated")


def _create(path: Path, generate: Callable[[], str]) -> None:
    """Write a new secret where no process can see it half-written, then link it into place.

    `os.link` fails if the name exists, so when several processes start at once exactly one
    secret wins and everyone reads that one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(generate() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
            log.info("generated %s (set it in the environment to share one across hosts)", path)
        except FileExistsError:
            pass  # another process won; its secret is the one
    finally:
        draft.unlink(missing_ok=True)


def _tighten(path: Path) -> None:
    """A key readable by others is no secret: make it 0600 again, and say so."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
        path.chmod(0o600)
