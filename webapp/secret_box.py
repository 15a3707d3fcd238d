"""Signing secrets at rest: sealed with Fernet under SECRETS_KEY, opened only when needed.

SECRETS_KEY holds one or more Fernet keys, comma-separated, newest first (MultiFernet): the
newest seals, every key opens, so a new key can be added before the old one is retired. Without
SECRETS_KEY a key is generated once into `instance/secrets.key` (mode 0600), which every process
of one checkout shares; several hosts must set SECRETS_KEY to the same value.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import re
from pathlib import Path
from types import ModuleType

from flask import Flask, current_app

from webapp.errors import ScorelineError
from webapp.secret_key import instance_secret

log = logging.getLogger(__name__)

KEY_FILE = "secrets.key"
OPENED_CACHE = 1024  # recently opened secrets each process keeps (see SecretBox.open)
EXTENSION = "secret_box"


class SecretsKeyError(ScorelineError):
    """A stored secret cannot be opened with any key of SECRETS_KEY: never sign with garbage."""

    status, code, title = 500, "SECRETS_KEY_MISMATCH", "Stored secrets cannot be decrypted"


@functools.cache
def _fernet() -> ModuleType:
    """`cryptography.fernet`, imported on first use: it maps ~10 MB (OpenSSL), which a web
    process that only answers polls never needs."""
    import cryptography.fernet

    return cryptography.fernet


def new_key() -> str:
    """A new Fernet key (what `Fernet.generate_key()` makes: 32 random bytes, url-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def is_fernet_key(key: str) -> bool:
    """True for 32 bytes in url-safe base64, the check Fernet itself makes."""
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


class SecretBox:
    """Seals and opens short secrets with a list of Fernet keys, the first of which seals."""

    def __init__(self, keys: list[str], source: str = "SECRETS_KEY") -> None:
        if not keys:
            raise RuntimeError(f"{source} is empty: give at least one Fernet key")
        for number, key in enumerate(keys, start=1):
            if not is_fernet_key(key):
                raise RuntimeError(
                    f"{source}: key {number} of {len(keys)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)"
                )
        self._keys = list(keys)
        # Opening costs ~50 us, more than signing; a delivery job opens its targets' secrets
        # every time. A process holding the key can open every row anyway, so remembering the
        # recently opened ones exposes nothing more.
        self._opened = functools.lru_cache(maxsize=OPENED_CACHE)(self._open)

    @functools.cached_property
    def _newest(self):
        return _fernet().Fernet(self._keys[0])

    @functools.cached_property
    def _all(self):
        fernet = _fernet()
        return fernet.MultiFernet([fernet.Fernet(key) for key in self._keys])

    def seal(self, plain: str) -> str:
        """The secret encrypted (and authenticated) with the newest key."""
        return self._newest.encrypt(plain.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        """The secret back; SecretsKeyError when no key opens it (wrong or retired key)."""
        return self._opened(sealed)

    def _open(self, sealed: str) -> str:
        try:
            return self._all.decrypt(sealed).decode()
        except _fernet().InvalidToken:
            log.error("secrets at rest: %s", _MISMATCH)
            raise SecretsKeyError(_MISMATCH) from None

    def is_current(self, sealed: str) -> bool:
        """True when the newest key opens it (nothing to re-encrypt)."""
        try:
            self._newest.decrypt(sealed)
        except _fernet().InvalidToken:
            return False
        return True

    def reseal(self, sealed: str) -> str:
        """The same secret sealed with the newest key; SecretsKeyError when no key opens it."""
        try:
            return self._all.rotate(sealed).decode("ascii")
        except _fernet().InvalidToken:
            raise SecretsKeyError(_MISMATCH) from None


_MISMATCH = (
    "A stored signing secret cannot be decrypted with any key in SECRETS_KEY. The key is wrong, "
    "differs between processes or hosts, or was retired before `flask rotate-secrets-key` ran; "
    "nothing is signed until it is set right (README: Secrets at rest)."
)


def parse_keys(raw: str) -> list[str]:
    """Keys separated by commas or whitespace, newest first."""
    return [key for key in re.split(r"[,\s]+", raw) if key]


def key_file_keys(instance_dir: Path) -> list[str]:
    """The keys in `instance/secrets.key`, generating one key there (mode 0600) the first time."""
    return parse_keys(instance_secret(instance_dir / KEY_FILE, new_key))


def init_app(app: Flask) -> None:
    """Build the app's box from SECRETS_KEY, or from the generated key file under instance/."""
    raw = app.config.get("SECRETS_KEY") or ""
    if raw.strip():
        app.extensions[EXTENSION] = SecretBox(parse_keys(raw))
    else:
        instance = Path(app.instance_path)
        app.extensions[EXTENSION] = SecretBox(key_file_keys(instance), str(instance / KEY_FILE))


def box() -> SecretBox:
    """The current app's box."""
    return current_app.extensions[EXTENSION]


def seal(plain: str) -> str:
    """Seal with the current app's newest key."""
    return box().seal(plain)


class Sealed:
    """A model attribute whose string is kept sealed in another (mapped) attribute.

    Reading opens it (SecretsKeyError with a wrong key), so only code that needs the secret pays
    for it or can fail on it; loading a row never does.
    """

    def __init__(self, column_attr: str) -> None:
        self.column_attr = column_attr

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None):
        if obj is None:
            return self
        sealed = getattr(obj, self.column_attr)
        return None if sealed is None else box().open(sealed)

    def __set__(self, obj: object, value: str | None) -> None:
        setattr(obj, self.column_attr, None if value is None else seal(value))
