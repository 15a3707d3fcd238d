"""Admin pages under /admin: one module per concept, all on this blueprint, admins only."""

from __future__ import annotations

import importlib
import pkgutil

from flask import Blueprint, abort
from flask_login import current_user, login_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
def require_admin():
    """Log in first; then only admins get past this point (403 for students)."""
    if not current_user.is_admin:
        abort(403, "This page is for admins.")


def _load_pages() -> None:
    """Import the page modules so their routes attach to `bp` (each module adds its own)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_load_pages()
