"""Admin: the operations overview (assessments, queues, workers, failed jobs, watchdog repairs,
throughput charts) and requeueing failed jobs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import redis
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from webapp.errors import ScorelineError
from webapp.scoring.vocabulary import AssessmentStatus
from webapp.services import (
    assessment_overview,
    audit,
    failed_jobs,
    queue_status,
    throughput,
    watchdog,
)
from webapp.services.audit import Action
from webapp.services.outcomes import outcomes
from webapp.views.admin import bp

T = TypeVar("T")

# The queues and workers panel re-polls this often.
LIVE_SECONDS = 5
FILTER_NAMES = ("status", "question_set", "degraded", "created_from", "created_to")

# Chart geometry in viewBox units; the SVG scales to its container.
CHART_WIDTH, CHART_HEIGHT = 600, 240
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 44, 588, 28, 200


@dataclass
class Series:
    """One series of a stacked bar chart: its key in HourCounts, its words and its colour."""

    key: str
    label: str
    css: str


SCORING_SERIES = [Series("completed", "Scored", "ok"), Series("failed", "Failed", "bad")]
DELIVERY_SERIES = [Series("succeeded", "Delivered", "ok"), Series("failed", "Failed", "bad")]


def age_words(age: timedelta | None) -> str:
    """A duration in short words: 8 s, 3 min, 2 h 5 min."""
    if age is None:
        return "none"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"


def _nice_max(value: int) -> int:
    """The y axis's top: the smallest of 1, 2, 5 x 10^n at or above `value` (at least 2)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= max(value, 2):
                return top * step
        top *= 10


def bar_chart(
    chart_id: str, title: str, hours: list[throughput.HourCounts], series: list[Series]
) -> dict:
    """Geometry for a stacked bar chart of hourly counts, drawn as inline SVG by `_chart.html`."""
    totals = [sum(hour.counts.values()) for hour in hours]
    top = _nice_max(max(totals, default=0))
    plot_height = PLOT_BOTTOM - PLOT_TOP
    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(hours), 1)
    bars = []
    for index, (hour, total) in enumerate(zip(hours, totals, strict=True)):
        x = PLOT_LEFT + index * slot + slot * 0.18
        y = PLOT_BOTTOM
        segments = []
        for item in series:
            value = hour.counts.get(item.key, 0)
            height = plot_height * value / top
            y -= height
            if value:
                segments.append({"y": y, "height": height, "css": item.css, "value": value})
        bars.append(
            {
                "x": x,
                "width": slot * 0.64,
                "center": x + slot * 0.32,
                "top": y,
                "total": total,
                "label": hour.start.strftime("%H:%M"),
                # Every third hour is labelled, counting back from the newest.
                "labelled": (len(hours) - 1 - index) % 3 == 0,
                "counts": hour.counts,
                "segments": segments,
            }
        )
    described = ", ".join(
        f"{item.label.lower()} {sum(h.counts.get(item.key, 0) for h in hours)}" for item in series
    )
    return {
        "id": chart_id,
        "title": title,
        "description": f"Per hour over the last {len(hours)} hours (UTC); in total {described}.",
        "series": series,
        "bars": bars,
        "ticks": [
            {"value": value, "y": PLOT_BOTTOM - plot_height * value / top}
            for value in (0, top // 2, top)
        ],
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "plot": {"left": PLOT_LEFT, "right": PLOT_RIGHT, "bottom": PLOT_BOTTOM},
    }


def _live_context() -> dict:
    """What `_queues.html` shows: every queue and worker, or that Redis is unreachable."""
    try:
        queues, workers = queue_status.queue_stats(), queue_status.workers()
    except redis.RedisError:
        return {"queues": [], "workers": [], "redis_down": True}
    return {"queues": queues, "workers": workers, "redis_down": False}


@bp.get("/operations")
def operations():
    """Assessments (filterable), queues, workers, failed jobs, watchdog repairs and throughput."""
    filters = assessment_overview.parse_filters(request.args)
    for error in filters.errors:
        flash(error, "error")
    live = _live_context()
    rows = assessment_overview.assessments(filters)
    try:
        failed = failed_jobs.newest()
    except redis.RedisError:
        failed = []
    failed_by_queue = {queue.name: queue.failed for queue in live["queues"] if queue.failed}
    # "Run again" in bulk only for jobs the app doesn't know (see failed_jobs).
    requeueable = Counter(
        job.queue for job in failed if job.purpose and job.purpose.remedy == "requeue"
    )
    return render_template(
        "admin/operations.html",
        **live,
        filters=filters,
        raw_filters={name: request.args.get(name, "") for name in FILTER_NAMES},
        statuses=list(AssessmentStatus),
        question_sets=assessment_overview.question_sets(),
        assessments=rows,
        failed_stages={i: o.failed_stages for i, o in outcomes([r.id for r in rows]).items()},
        assessment_limit=assessment_overview.ASSESSMENT_LIMIT,
        failed_jobs=failed,
        failed_by_queue=failed_by_queue,
        requeueable=requeueable,
        failed_limit=failed_jobs.FAILED_JOB_LIMIT,
        repairs=watchdog.recent_repairs(),
        scoring_chart=bar_chart(
            "scoring",
            "Scoring throughput",
            throughput.scoring_throughput(),
            SCORING_SERIES,
        ),
        delivery_chart=bar_chart(
            "deliveries",
            "Webhook delivery attempts",
            throughput.delivery_throughput(),
            DELIVERY_SERIES,
        ),
        age_words=age_words,
        LIVE_SECONDS=LIVE_SECONDS,
    )


@bp.get("/operations/live")
def operations_live():
    """The polled queues and workers panel."""
    return render_template(
        "admin/_queues.html", **_live_context(), age_words=age_words, LIVE_SECONDS=LIVE_SECONDS
    )


@bp.post("/operations/queues/<queue_name>/jobs/<job_id>/requeue")
def requeue_job(queue_name: str, job_id: str):
    """Mend one failed job: a scoring stage's assessment is scored again (its stages and report
    run anew); a job the app doesn't know runs again as it was. Others are refused, saying why."""
    purpose = _attempt(queue_name, lambda: failed_jobs.mend(queue_name, job_id, current_user))
    if purpose is None:
        return _back()
    details = {"queue": queue_name}
    if purpose.remedy == failed_jobs.Remedy.RESCORE:
        details["rescored_assessment"] = purpose.assessment_id
    audit.record(
        Action.JOB_REQUEUED,
        actor=current_user,
        entity_type="job",
        entity_id=job_id,
        details=details,
    )
    if purpose.remedy == failed_jobs.Remedy.RESCORE:
        flash(
            f"Assessment #{purpose.assessment_id} is being scored again: every stage and the "
            "report run anew.",
            "success",
        )
        return redirect(url_for("progress.page", assessment_id=purpose.assessment_id))
    flash(f"Job {job_id} is back on the {queue_name} queue.", "success")
    return _back()


@bp.post("/operations/queues/<queue_name>/jobs/<job_id>/clear")
def clear_job(queue_name: str, job_id: str):
    """Delete one failed job from the list (its work is not run again)."""
    count = _attempt(queue_name, lambda: failed_jobs.clear(queue_name, [job_id]))
    if count:
        _audit(Action.JOBS_CLEARED, "job", job_id, queue_name, count)
        flash(f"Job {job_id} cleared from the failed list.", "success")
    elif count == 0:
        flash(f"Job {job_id} is no longer in the failed list.", "info")
    return _back()


@bp.post("/operations/queues/<queue_name>/clear-failed")
def clear_failed(queue_name: str):
    """Delete every failed job of one queue from the list."""
    count = _attempt(queue_name, lambda: failed_jobs.clear(queue_name))
    if count is not None:
        _done_with_queue(Action.JOBS_CLEARED, queue_name, count, "cleared from")
    return _back()


@bp.post("/operations/queues/<queue_name>/requeue-failed")
def requeue_failed(queue_name: str):
    """Put every failed job of one queue that only running again can mend back on it."""
    count = _attempt(queue_name, lambda: failed_jobs.requeue_failed(queue_name))
    if count is not None:
        _done_with_queue(Action.JOB_REQUEUED, queue_name, count, "back on")
    return _back()


def _attempt(queue_name: str, action: Callable[[], T]) -> T | None:
    """Run a change to the failed jobs; when it can't be made, flash why and return None."""
    try:
        return action()
    except failed_jobs.UnknownQueue:
        flash(f"There is no queue named “{queue_name}”.", "error")
    except failed_jobs.NothingToMend as exc:
        flash(str(exc), "error")
    except ScorelineError as exc:  # the assessment changed meanwhile (a rescore already runs)
        flash(exc.detail, "error")
    except redis.RedisError:
        flash("Redis is unreachable; nothing was changed.", "error")
    return None


def _audit(action: Action, entity_type: str, entity_id: str, queue_name: str, count: int) -> None:
    """Record who changed failed jobs, and how many."""
    audit.record(
        action,
        actor=current_user,
        entity_type=entity_type,
        entity_id=entity_id,
        details={"queue": queue_name, "jobs": count},
    )


def _done_with_queue(action: Action, queue_name: str, count: int, words: str) -> None:
    """Audit (when anything changed) and report a change to a whole queue's failed jobs."""
    if count:
        _audit(action, "queue", queue_name, queue_name, count)
    flash(
        f"{count} failed job{'' if count == 1 else 's'} {words} the {queue_name} queue.",
        "success" if count else "info",
    )


def _back():
    """Back to the failed jobs on the overview."""
    return redirect(url_for("admin.operations", _anchor="failed-jobs"))
