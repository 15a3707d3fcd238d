"""Schemathesis hooks for tests/test_openapi.py (loaded by `st` through SCHEMATHESIS_HOOKS).

Generated requests reuse values, so two different POSTs would often share an Idempotency-Key and
rightly get 422 IDEMPOTENCY_KEY_REUSED, an answer no schema predicts (the document names it).
Every valid key is made unique here, so each request is judged on its own; invalid keys stay as
generated (400 INVALID_IDEMPOTENCY_KEY). Key reuse itself is tested in tests/test_idempotency.py.
"""

from __future__ import annotations

import itertools
import re

import schemathesis

# webapp/api/openapi.py: IDEMPOTENCY_KEY_PATTERN, as the served document says it.
VALID_KEY = re.compile(r'^(?!""$)[!-~](?:[ -~]{0,253}[!-~])?$')
_serial = itertools.count(1)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Give each request with a valid Idempotency-Key a key of its own."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        case.headers["Idempotency-Key"] = f"{key[:200].rstrip()}-{next(_serial)}"
