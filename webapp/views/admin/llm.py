"""Admin: the LLM provider panel of the operations page (breaker, limits, waiting work, cost)."""

from __future__ import annotations

from flask import render_template

from webapp.models.base import utcnow
from webapp.services.llm import overview as llm_overview
from webapp.views.admin import bp
from webapp.views.admin.operations import LIVE_SECONDS, age_words

BREAKER_WORDS = {
    "closed": "Closed: calls go through",
    "open": "Open: LLM work is paused",
    "half-open": "Half-open: one probe call decides",
}


@bp.get("/operations/llm")
def operations_llm():
    """The polled LLM provider panel (the operations page loads it)."""
    facts = llm_overview.overview()
    return render_template(
        "admin/_llm.html",
        llm=facts,
        breaker_words=BREAKER_WORDS,
        since=lambda moment: age_words(utcnow() - moment) if moment else "none",
        epoch=llm_overview.epoch,
        LIVE_SECONDS=LIVE_SECONDS,
    )
