"""Text no column can hold (NUL) refused in every form a page posts.

PostgreSQL refuses NUL in any text it stores or compares, so a NUL in a form field would
otherwise surface as a database error (500). The API has the same rule for its JSON and query
strings (webapp/api); here the answer is a page saying which field was refused. Query strings
are each page's to parse (webapp/request_values), so a bad filter is explained and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, current_app, request

from webapp.errors import ValidationFailed
from webapp.request_values import unstorable_text

View = TypeVar("View", bound=Callable)


def checks_own_text(view: View) -> View:
    """Mark a view that refuses unstorable text itself, with a message in its own form."""
    view.checks_own_text = True  # type: ignore[attr-defined]
    return view


def guard(bp: Blueprint) -> None:
    """Refuse NUL in the forms posted to `bp`: 422 and a page saying so."""

    @bp.before_request
    def _refuse_unstorable_text():
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(view, "checks_own_text", False):
            return
        fields = [
            error["field"]
            for name, value in request.form.items(multi=True)
            for error in unstorable_text(name + value, name)
        ]
        if fields:
            raise ValidationFailed(
                f"The text sent in {', '.join(sorted(set(fields)))} contains a NUL character, "
                "which cannot be stored. Nothing was changed; remove it and try again."
            )
