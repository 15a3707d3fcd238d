"""The README's receiver snippet works: it accepts what Scoreline signs and refuses the rest."""

from __future__ import annotations

import importlib.util
import re
import time

from webapp.config import PROJECT_ROOT
from webapp.models.accounts import new_signing_secret
from webapp.services.webhooks import signing


def readme_receiver(tmp_path, secret: str):
    """Import the README's Flask receiver, with `secret` in place of "whsec_..."."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    code = re.search(r"```python\n(from flask import Flask, abort.*?)```", readme, re.S).group(1)
    path = tmp_path / "readme_receiver.py"
    path.write_text(code.replace('"whsec_..."', repr(secret)))
    spec = importlib.util.spec_from_file_location("readme_receiver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app.test_client()


def test_the_readme_receiver_verifies_deliveries(tmp_path):
    secret = new_signing_secret()
    receiver = readme_receiver(tmp_path, secret)
    body = b'{"type":"webhook.test","timestamp":"2025-01-01T00:00:00.000Z","data":{}}'
    now = int(time.time())
    # During a rotation the header carries two signatures; the receiver holds one of the secrets.
    headers = signing.headers(
        body, webhook_id="msg_readme", timestamp=now, keys=[new_signing_secret(), secret]
    )
    assert receiver.post("/webhooks/scoreline", data=body, headers=headers).status_code == 204

    forged = {**headers, "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}
    assert receiver.post("/webhooks/scoreline", data=body, headers=forged).status_code == 400
    stale = signing.headers(body, webhook_id="msg_readme", timestamp=now - 3600, keys=[secret])
    assert receiver.post("/webhooks/scoreline", data=body, headers=stale).status_code == 400
    tampered = body.replace(b"webhook.test", b"assessment.completed")
    assert receiver.post("/webhooks/scoreline", data=tampered, headers=headers).status_code == 400
