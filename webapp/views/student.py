"""The student's pages."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from webapp.services.assessments import list_assessments

bp = Blueprint("student", __name__)


@bp.get("/")
@login_required
def dashboard():
    """The student's assessments with their status."""
    return render_template("student/dashboard.html", assessments=list_assessments(current_user))
