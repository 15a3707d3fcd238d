"""The HTML pages through Flask's test client: forms, CSRF, escaping, access, polling answers."""

from __future__ import annotations

import re

import pytest
import redis
from sqlalchemy import select

from tests.support import ADMIN, OTHER_STUDENT, STUDENT, csrf_token, flashes, log_in
from webapp import create_app
from webapp.extensions import db
from webapp.models import ApiToken, Assessment, Operation, User
from webapp.scoring.vocabulary import Stage
from webapp.services import pipeline, progress
from webapp.services.assessments import MAX_ANSWER_LENGTH
from webapp.views.presentation import inline_code, safe_url

STOP_POLLING = 286


@pytest.fixture(scope="module")
def site(app, idle_redis_url):
    """The app on the test database, enqueueing where no worker listens: nothing runs by itself."""
    url = idle_redis_url  # the tests run stages themselves
    redis.Redis.from_url(url).flushdb()
    yield create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": url,
            "SECRET_KEY": app.config["SECRET_KEY"],
        }
    )
    redis.Redis.from_url(url).flushdb()


@pytest.fixture()
def browser(site):
    """A cookie-keeping test client on `site`."""
    return site.test_client()


def start(client, token: str, slug: str = "python-basics") -> int:
    """Start an assessment through the dashboard form and open it; returns its id."""
    response = client.post("/assessments", data={"csrf_token": token, "question_set": slug})
    assert response.status_code == 302
    assert client.get(response.headers["Location"]).status_code == 200
    return int(response.headers["Location"].rstrip("/").split("/")[-1])


def question_ids(site, assessment_id: int) -> dict[str, list[int]]:
    """The assessment's question ids by type."""
    with site.app_context():
        assessment = db.session.get(Assessment, assessment_id)
        out: dict[str, list[int]] = {}
        for q in assessment.question_set.questions:
            out.setdefault(q.type, []).append(q.id)
        return out


def run_scoring(site, assessment_id: int) -> None:
    """Run the worker stages in this process, as the worker would, until the report exists."""
    with site.app_context():
        operation = db.session.scalar(
            select(Operation).where(Operation.assessment_id == assessment_id)
        )
        runs = {run.name: run.id for run in operation.stage_runs}
        for stage in (Stage.GPT, Stage.RAG, Stage.FUSION):
            pipeline.run_stage(runs[stage])
        db.session.remove()


def submit(client, token: str, assessment_id: int) -> None:
    """Confirm the submission and land on the progress page."""
    response = client.post(f"/assessments/{assessment_id}/submit", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/assessments/{assessment_id}/progress")
    assert client.get(response.headers["Location"]).status_code == 200


# --- logging in ---------------------------------------------------------------------------


def test_login_form_has_labelled_fields(browser):
    html = browser.get("/login").get_data(as_text=True)
    assert '<label for="email">Email</label>' in html
    assert '<label for="password">Password</label>' in html


def test_wrong_password_is_flashed(browser):
    token = csrf_token(browser)
    response = browser.post(
        "/login", data={"csrf_token": token, "email": STUDENT[0], "password": "nope"}
    )
    assert response.status_code == 400
    assert flashes(response) == ["Wrong email or password."]


def test_pages_need_a_login(browser):
    for path in ("/", "/account", "/assessments/1", "/assessments/1/progress"):
        response = browser.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/account", "/account"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("https://evil.example/", "/"),
    ],
)
def test_login_returns_only_to_pages_of_this_site(browser, target, landing):
    token = csrf_token(browser)
    response = browser.post(
        f"/login?next={target}",
        data={"csrf_token": token, "email": STUDENT[0], "password": STUDENT[1]},
    )
    assert response.headers["Location"] == landing


def test_logged_out_poll_is_sent_to_the_login_page_not_swapped_in(browser):
    response = browser.get(
        "/assessments/1/progress/live",
        headers={"HX-Request": "true", "HX-Current-URL": "http://x/assessments/1/progress"},
    )
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/login?next=/assessments/1/progress"
    assert response.get_data() == b""


# --- CSRF -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/assessments", {"question_set": "python-basics"}),
        ("/account/tokens", {"name": "sneaky"}),
        ("/logout", {}),
    ],
)
def test_form_posts_without_csrf_token_are_refused(browser, site, path, data):
    log_in(browser)
    response = browser.post(path, data=data)
    assert response.status_code == 400
    assert "Form not accepted" in response.get_data(as_text=True)
    assert browser.get("/").status_code == 200  # still logged in: /logout did nothing
    with site.app_context():
        assert db.session.scalars(select(Assessment)).all() == []
        assert db.session.scalars(select(ApiToken).where(ApiToken.name == "sneaky")).all() == []


def test_answers_posted_with_a_forged_token_are_not_saved(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    essay = question_ids(site, assessment_id)["essay"][0]
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": "forged", f"q-{essay}": "changed", "action": "save"},
    )
    assert response.status_code == 400
    with site.app_context():
        assert db.session.get(Assessment, assessment_id).responses == []


def test_login_without_csrf_token_is_refused(browser):
    response = browser.post("/login", data={"email": STUDENT[0], "password": STUDENT[1]})
    assert response.status_code == 400
    assert browser.get("/").status_code == 302


# --- taking an assessment -----------------------------------------------------------------


def test_draft_is_saved_and_shown_again(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    ids = question_ids(site, assessment_id)
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={
            "csrf_token": token,
            f"q-{ids['theoretical'][0]}": "b",
            f"q-{ids['essay'][0]}": "Line one\r\nLine two",
            "action": "save",
        },
        follow_redirects=True,
    )
    assert flashes(response) == ["Draft saved."]
    html = response.get_data(as_text=True)
    assert (
        f'id="q-{ids["theoretical"][0]}-b" name="q-{ids["theoretical"][0]}" value="b" checked'
        in html
    )
    assert ">\nLine one\nLine two</textarea>" in html


def test_typed_text_is_escaped_everywhere_it_is_shown(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    essay = question_ids(site, assessment_id)["essay"][0]
    attack = '</textarea><script>alert("x")</script>'
    browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": token, f"q-{essay}": attack, "action": "save"},
    )
    html = browser.get(f"/assessments/{assessment_id}").get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html

    submit(browser, token, assessment_id)
    run_scoring(site, assessment_id)
    html = browser.get(f"/assessments/{assessment_id}/result").get_data(as_text=True)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_an_option_that_does_not_exist_is_flashed_not_saved(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    first = question_ids(site, assessment_id)["theoretical"][0]
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": token, f"q-{first}": "zzz", "action": "save"},
    )
    assert response.status_code == 422
    assert flashes(response) == ["Question 1: choose one of the listed options."]
    with site.app_context():
        assert db.session.get(Assessment, assessment_id).responses == []


def test_an_overlong_answer_is_flashed_and_kept_in_the_form(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    essay = question_ids(site, assessment_id)["essay"][0]
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": token, f"q-{essay}": "x" * (MAX_ANSWER_LENGTH + 1), "action": "save"},
    )
    assert response.status_code == 422
    assert flashes(response) == [
        f"Question 7: the answer is longer than {MAX_ANSWER_LENGTH} characters."
    ]
    assert "x" * (MAX_ANSWER_LENGTH + 1) in response.get_data(as_text=True)


def test_an_unknown_question_set_is_flashed(browser):
    token = log_in(browser)
    response = browser.post(
        "/assessments", data={"csrf_token": token, "question_set": "nope"}, follow_redirects=True
    )
    assert response.status_code == 200
    assert flashes(response) == ["That question set does not exist (any more)."]


def test_confirmation_names_every_unanswered_question(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    first = question_ids(site, assessment_id)["theoretical"][0]
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": token, f"q-{first}": "b", "action": "review"},
        follow_redirects=True,
    )
    html = response.get_data(as_text=True)
    assert "7 questions unanswered" in html
    named = re.findall(r"#question-\d+\">Question (\d+)</a>", html)
    assert named == ["2", "3", "4", "5", "6", "7", "8"]


def test_a_submitted_assessment_is_locked(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    submit(browser, token, assessment_id)
    essay = question_ids(site, assessment_id)["essay"][0]
    response = browser.post(
        f"/assessments/{assessment_id}",
        data={"csrf_token": token, f"q-{essay}": "late", "action": "save"},
        follow_redirects=True,
    )
    assert flashes(response) == ["This assessment was already submitted; its answers are locked."]
    assert browser.get(f"/assessments/{assessment_id}").status_code == 302
    submit(browser, token, assessment_id)  # a second submit is harmless
    with site.app_context():
        assert len(db.session.scalars(select(Operation)).all()) == 1


# --- progress and result ----------------------------------------------------------------


def test_progress_polls_while_scoring_and_stops_once_finished(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    submit(browser, token, assessment_id)
    live = f"/assessments/{assessment_id}/progress/live"

    page = browser.get(f"/assessments/{assessment_id}/progress").get_data(as_text=True)
    assert f'hx-get="{live}" hx-trigger="every 2s"' in page
    assert 'data-testid="overall-progress"' in page and 'aria-valuenow="20"' in page
    for stage in Stage:
        assert f'data-testid="stage-{stage.value}"' in page
    polled = browser.get(live, headers={"HX-Request": "true"})
    assert polled.status_code == 200
    assert "hx-trigger" in polled.get_data(as_text=True)

    run_scoring(site, assessment_id)
    polled = browser.get(live, headers={"HX-Request": "true"})
    html = polled.get_data(as_text=True)
    assert polled.status_code == STOP_POLLING
    assert "hx-trigger" not in html
    assert 'data-testid="result-link"' in html
    assert 'hx-swap-oob="innerHTML">Scoring finished. Your result is ready.' in html
    assert html.count('aria-valuenow="100"') == 5


def test_result_page_shows_rubric_recommendations_and_why_it_is_partial(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    assert browser.get(f"/assessments/{assessment_id}/result").status_code == 302
    submit(browser, token, assessment_id)
    response = browser.get(f"/assessments/{assessment_id}/result", follow_redirects=True)
    assert flashes(response) == [
        "The result is not ready yet; it appears here when scoring finishes."
    ]

    run_scoring(site, assessment_id)
    html = browser.get(f"/assessments/{assessment_id}/result").get_data(as_text=True)
    assert 'data-testid="degraded-notice"' in html
    assert "8 questions were left unanswered and score 0" in html
    for dimension in ("relevance", "depth", "clarity", "technical"):
        assert html.count(f'data-testid="rubric-{dimension}"') == 2
    assert "Scored by the offline rubric scorer" in html
    assert 'data-testid="recommendation"' in html


@pytest.mark.parametrize("suffix", ["", "/submit", "/progress", "/progress/live", "/result"])
def test_another_students_pages_are_forbidden(site, suffix):
    owner, other = site.test_client(), site.test_client()
    assessment_id = start(owner, log_in(owner))
    log_in(other, OTHER_STUDENT)
    response = other.get(f"/assessments/{assessment_id}{suffix}")
    assert response.status_code == 403
    assert "another account" in response.get_data(as_text=True)
    assert other.get(f"/assessments/{assessment_id + 1000}{suffix}").status_code == 404
    assert f'data-testid="assessment-{assessment_id}"' not in other.get("/").get_data(as_text=True)


def test_a_poll_for_an_assessment_gone_or_not_yours_stops_polling(site):
    owner, other = site.test_client(), site.test_client()
    assessment_id = start(owner, log_in(owner))
    log_in(other, OTHER_STUDENT)
    for client, target in ((other, assessment_id), (owner, assessment_id + 1000)):
        response = client.get(
            f"/assessments/{target}/progress/live", headers={"HX-Request": "true"}
        )
        assert response.status_code == STOP_POLLING
        assert 'data-testid="progress-gone"' in response.get_data(as_text=True)
        assert "hx-trigger" not in response.get_data(as_text=True)


def test_dashboard_polls_only_while_something_is_being_scored(browser, site):
    token = log_in(browser)
    assessment_id = start(browser, token)
    assert "hx-trigger" not in browser.get("/").get_data(as_text=True)
    assert browser.get("/assessments/list").status_code == STOP_POLLING

    submit(browser, token, assessment_id)
    html = browser.get("/").get_data(as_text=True)
    assert 'hx-get="/assessments/list" hx-trigger="every 2s"' in html
    assert f'data-testid="assessment-{assessment_id}-progress"' in html
    assert browser.get("/assessments/list").status_code == 200

    run_scoring(site, assessment_id)
    polled = browser.get("/assessments/list")
    assert polled.status_code == STOP_POLLING
    assert "hx-trigger" not in polled.get_data(as_text=True)
    assert ">Scored</span>" in polled.get_data(as_text=True)


# --- account ------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_its_name_escaped(browser, site):
    token = log_in(browser)
    response = browser.post(
        "/account/tokens", data={"csrf_token": token, "name": "<img src=x onerror=alert(1)>"}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    plain = re.search(r'value="(sl_[^"]+)" data-testid="new-token-value"', html).group(1)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert plain not in browser.get("/account").get_data(as_text=True)
    assert (
        browser.get("/api/v1/assessments", headers={"Authorization": f"Bearer {plain}"}).status_code
        == 200
    )


def test_a_token_name_too_long_is_flashed(browser):
    token = log_in(browser)
    response = browser.post("/account/tokens", data={"csrf_token": token, "name": "n" * 101})
    assert response.status_code == 422
    assert flashes(response) == ["A token name can be at most 100 characters."]


def test_nobody_can_revoke_someone_elses_token(browser, site, tokens):
    token = log_in(browser, OTHER_STUDENT)
    with site.app_context():
        student = db.session.scalar(select(User).where(User.email == STUDENT[0]))
        theirs = db.session.scalar(select(ApiToken).where(ApiToken.user_id == student.id))
        theirs_id = theirs.id
    response = browser.post(
        f"/account/tokens/{theirs_id}/revoke", data={"csrf_token": token}, follow_redirects=True
    )
    assert flashes(response) == ["That token does not exist or is not yours."]
    with site.app_context():
        assert db.session.get(ApiToken, theirs_id).revoked_at is None


def test_account_page_shows_the_signing_secret(browser, site):
    log_in(browser)
    with site.app_context():
        secret = db.session.scalar(select(User).where(User.email == STUDENT[0])).signing_secret
    assert f'value="{secret}" data-testid="signing-secret"' in browser.get("/account").get_data(
        as_text=True
    )


# --- presentation -------------------------------------------------------------------------


def test_backticks_become_code_and_everything_else_is_escaped():
    assert str(inline_code("Is `a<b` <i>true</i>?")) == (
        "Is <code>a&lt;b</code> &lt;i&gt;true&lt;/i&gt;?"
    )


@pytest.mark.parametrize(
    ("url", "linked"),
    [
        ("https://docs.python.org/3/", True),
        ("http://example.com", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("data:text/html,x", False),
        (None, False),
    ],
)
def test_only_http_links_are_made_clickable(url, linked):
    assert (safe_url(url) is not None) is linked


def test_a_failed_stage_never_looks_like_success(site):
    """A report written after a failed stage is 'Partly scored', the failed bar stops where the
    stage stopped, the student reads plain words, and the admin the error and a rescore button."""
    student = site.test_client()
    token = log_in(student)
    assessment_id = start(student, token)
    submit(student, token, assessment_id)
    with site.app_context():
        operation = db.session.scalar(
            select(Operation).where(Operation.assessment_id == assessment_id)
        )
        runs = {run.name: run for run in operation.stage_runs}
        progress.fail_stage(runs[Stage.GPT], "The OpenAI API answered HTTP 500 three times.")
        db.session.commit()
        for stage in (Stage.RAG, Stage.FUSION):
            pipeline.run_stage(runs[stage].id)
        db.session.remove()

    page = student.get(f"/assessments/{assessment_id}/progress").get_data(as_text=True)
    assert 'aria-valuetext="100%, Partly scored"' in page
    gpt_bar = re.search(r'data-testid="stage-gpt".*?aria-valuetext="([^"]*)"', page, re.S)
    assert gpt_bar.group(1) == "0%, Failed"  # where it stopped, never "100"
    assert "Essay scoring failed." in page and "you don&#39;t need to do anything" in page
    assert "HTTP 500" not in page  # the technical detail is for admins
    assert 'data-testid="rescore"' not in page
    assert "Partly scored" in student.get("/").get_data(as_text=True)

    admin = site.test_client()
    log_in(admin, ADMIN)
    page = admin.get(f"/assessments/{assessment_id}/progress").get_data(as_text=True)
    assert "HTTP 500" in page
    assert 'data-testid="rescore"' in page
