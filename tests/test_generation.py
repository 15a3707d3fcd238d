"""Question generation: the offline generator, the OpenAI writer, the operations API through a
real worker, and the admin question sets page."""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import redis
from sqlalchemy import delete, func, select

from tests.openai_server import Reply, rubric_reply
from tests.support import ADMIN, STUDENT, Api, log_in
from webapp import create_app
from webapp.extensions import db
from webapp.models import AuditEntry, Operation, Question, QuestionSet
from webapp.scoring.base import StageError
from webapp.scoring.generation import (
    OFFLINE_GENERATOR,
    QUESTION_TYPES,
    DraftQuestion,
    OpenAIQuestionWriter,
    generate_offline,
    topic_resources,
    topics,
)
from webapp.scoring.retrieval import DEFAULT_PATH, KnowledgeBase, default_knowledge_base
from webapp.scoring.rubric import score_essay_offline
from webapp.services.llm.calls import Gate, Provider

pytestmark = pytest.mark.db

KB = default_knowledge_base()
RESOURCES = {res["id"]: res for res in json.loads(DEFAULT_PATH.read_text())["resources"]}


def skills_on(topic: str) -> set[str]:
    """Every skill of every resource tagged with the topic."""
    return {skill for res in topic_resources(KB, topic) for skill in res["skills"]}


AREAS = json.loads(DEFAULT_PATH.read_text())["areas"]
AREA_OF = {topic: area for area, members in AREAS.items() for topic in members}
# Words too common to make two options alike.
FILLER = {"and", "vs", "of", "the", "with", "a", "to"}


def homes_of(skill: str) -> set[str]:
    """The main topics of the resources that list a skill."""
    return {res["topics"][0] for res in RESOURCES.values() if skill in res["skills"]}


def words(text: str) -> set[str]:
    """The content words of an option, lowercased."""
    return set(re.findall(r"[a-z0-9]+", text.lower())) - FILLER


def split_options(draft: DraftQuestion) -> tuple[str, list[str]]:
    """The right answer and the distractors of a theoretical draft."""
    options = dict(draft.options)
    return options[draft.correct_option], [t for i, t in draft.options if i != draft.correct_option]


# --- the offline generator ---------------------------------------------------------------------


@pytest.mark.parametrize("question_type", QUESTION_TYPES)
def test_offline_generator_is_deterministic(question_type):
    first = generate_offline(KB, "recursion", question_type)
    # A freshly loaded and indexed knowledge base (as in another process) gives the same draft.
    again = generate_offline(KnowledgeBase.load(), "recursion", question_type)
    assert first == again
    assert first.to_dict() == again.to_dict()


def test_offline_theoretical_question_has_one_right_answer_and_near_miss_distractors():
    draft = generate_offline(KB, "recursion", "theoretical")

    assert draft.type == "theoretical" and draft.weight == 1.0
    assert draft.generator == OFFLINE_GENERATOR
    assert "recursion" in draft.prompt
    options = dict(draft.options)
    assert sorted(options) == ["a", "b", "c", "d"]
    assert len({text.lower() for text in options.values()}) == 4
    correct = options[draft.correct_option]
    assert correct in skills_on("recursion")
    distractors = [text for oid, text in draft.options if oid != draft.correct_option]
    assert not set(distractors) & skills_on("recursion")
    # Each distractor is a real skill of the topic's neighbours in its area, both of them used.
    assert {home for text in distractors for home in homes_of(text)} == {
        "functions",
        "iterators-generators",
    }
    assert draft.key_concepts == (correct,)
    assert all("recursion" in RESOURCES[rid]["topics"] for rid in draft.source_ids)


def test_the_shipped_knowledge_base_puts_every_topic_in_one_area():
    assert sorted(AREA_OF) == topics(KB)
    assert KB.areas == AREA_OF
    assert all(len(members) >= 3 for members in AREAS.values())


@pytest.mark.parametrize(
    "topic",
    ["authentication", "caching", "recursion", "json", "classes-oop", "status-codes", "webhooks"],
)
def test_offline_distractors_are_plausible_near_misses_from_the_topics_area(topic):
    answer, distractors = split_options(generate_offline(KB, topic, "theoretical"))

    assert len(distractors) == 3
    label_words = words(topic.replace("-", " "))
    for text in distractors:
        # From the same area: a skill of a resource mainly about another topic of that area.
        assert {AREA_OF[home] for home in homes_of(text)} == {AREA_OF[topic]}, text
        # Wrong: no resource on the topic lists it.
        assert text not in skills_on(topic) and topic not in homes_of(text)
        # Not a synonym of the answer, and not a giveaway that repeats the topic's name.
        assert not words(text) & (words(answer) | label_words), text
        # Shaped like the answer: at most twice as long or short.
        assert max(len(text), len(answer)) <= 2 * min(len(text), len(answer)), text
    # Four different options that don't share words with each other.
    assert len({text.lower() for text in [answer, *distractors]}) == 4
    assert all(not words(a) & words(b) for a in distractors for b in distractors if a != b)


def test_authentication_distractors_are_about_security_not_paging_or_throttling():
    # The example: "limit and offset" (pagination) offered as a wrong answer about
    # authentication, beside "token bucket" (rate limiting); a student rules them out unread.
    draft = generate_offline(KB, "authentication", "theoretical")
    _, distractors = split_options(draft)

    assert "limit and offset" not in distractors and "token bucket" not in distractors
    assert all(homes_of(text) <= set(AREAS["security"]) for text in distractors)


def test_code_like_answers_get_code_like_distractors():
    answer, distractors = split_options(generate_offline(KB, "classes-oop", "theoretical"))

    assert answer == "__init__ and self"
    assert all(re.search(r"[()_.@*=]", text) for text in distractors), distractors


def test_a_knowledge_base_without_areas_still_gives_three_distractors(tmp_path):
    document = {"version": 1, "resources": list(RESOURCES.values())}
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    kb = KnowledgeBase.load(path)

    assert kb.areas == {}
    answer, distractors = split_options(generate_offline(kb, "authentication", "theoretical"))
    assert len(set(distractors)) == 3 and answer not in distractors
    assert not set(distractors) & skills_on("authentication")


def test_offline_essay_asks_for_the_topics_key_concepts():
    draft = generate_offline(KB, "caching", "essay")

    assert draft.type == "essay" and draft.weight == 4.0
    assert draft.options == () and draft.correct_option is None
    assert "caching" in draft.prompt
    assert len(draft.key_concepts) == 5
    assert set(draft.key_concepts) <= skills_on("caching")
    assert all(concept in draft.prompt for concept in draft.key_concepts[:3])
    assert {res["id"] for res in topic_resources(KB, "caching")} == set(draft.source_ids)


def test_a_generated_essay_prompt_rewards_answers_that_cover_its_concepts():
    draft = generate_offline(KB, "caching", "essay")
    covering = (
        "Caching keeps a copy of a response so the next request is cheaper. With Cache-Control "
        "and max-age the server says how long a copy stays fresh, because revalidating too often "
        "wastes bandwidth. An ETag lets a client revalidate with If-None-Match and get a 304. In "
        "the cache-aside pattern the application reads Redis first, for example user profiles, "
        "and the pitfall is stale data when invalidation is forgotten."
    )
    offhand = "Caching is when things are faster."
    good = score_essay_offline(draft.prompt, draft.key_concepts, covering)
    poor = score_essay_offline(draft.prompt, draft.key_concepts, offhand)
    for dimension in ("relevance", "depth", "technical"):
        assert good.rubric[dimension].score > poor.rubric[dimension].score


def test_every_topic_and_type_gives_a_valid_draft():
    drafts = [generate_offline(KB, t, kind) for t in topics(KB) for kind in QUESTION_TYPES]

    assert len(topics(KB)) >= 20
    for draft in drafts:
        assert DraftQuestion.from_dict(draft.to_dict()) == draft  # validated both ways
        assert draft.source_ids and set(draft.source_ids) <= set(RESOURCES)
    theoretical = [d for d in drafts if d.type == "theoretical"]
    for draft in theoretical:  # every topic's area is big enough for its distractors
        _, distractors = split_options(draft)
        assert all(AREA_OF[draft.topic] in {AREA_OF[h] for h in homes_of(t)} for t in distractors)
    # The right answer is not always in the same place.
    assert len({d.correct_option for d in theoretical}) >= 3
    assert len({d.prompt for d in drafts}) == len(drafts)


def test_generating_on_an_unknown_topic_is_a_stage_error():
    with pytest.raises(StageError, match="no resources"):
        generate_offline(KB, "astrology", "essay")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"correct_option": "z"}, "correct option"),
        ({"options": [{"id": i, "text": t} for i, t in zip("abc", "xXy", strict=True)]}, "unique"),
        ({"options": [{"id": "a", "text": "x"}]}, "3 to"),
        ({"prompt": "  "}, "prompt"),
        ({"type": "profile"}, "type"),
        ({"weight": 0}, "weight"),
    ],
)  # fmt: skip
def test_draft_validation_rejects_unusable_questions(change, problem):
    data = {**generate_offline(KB, "json", "theoretical").to_dict(), **change}
    with pytest.raises(ValueError, match=problem):
        DraftQuestion.from_dict(data)


def test_an_essay_draft_needs_key_concepts_and_no_options():
    data = generate_offline(KB, "json", "essay").to_dict()
    with pytest.raises(ValueError, match="no options"):
        DraftQuestion.from_dict({**data, "correct_option": "a"})
    with pytest.raises(ValueError, match="key concepts"):
        DraftQuestion.from_dict({**data, "key_concepts": ["one"]})


# --- the OpenAI writer, against a real local server --------------------------------------------


def question_reply(**answer) -> Reply:
    """A chat completion whose content is a question JSON."""
    content = {
        "prompt": "What must every recursive function have so that it stops?",
        "options": ["A base case", "A global variable", "A while loop", "A decorator"],
        "correct_index": 0,
        "key_concepts": ["base case"],
        **answer,
    }
    return rubric_reply(content=json.dumps(content))


def provider_for(server, connection: redis.Redis, rpm: int = 600) -> Provider:
    """The provider as the worker builds it: the local server, the fleet's limiter and breaker."""
    config = {
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_MODEL": "test-model",
        "OPENAI_TIMEOUT": 5.0,
        "OPENAI_RPM": rpm,
        "OPENAI_TPM": 1_000_000,
        "LLM_BREAKER_FAILURES": 5,
        "LLM_BREAKER_COOLDOWN": 0.5,
    }
    return Provider.from_config(config, connection)


@pytest.fixture()
def connection(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def writer_for(
    server, connection, sleep=lambda _: None, provider: Provider | None = None, **kwargs
) -> OpenAIQuestionWriter:
    gate = Gate(provider or provider_for(server, connection))
    return OpenAIQuestionWriter(gate.complete, "openai:test-model", sleep=sleep, **kwargs)


def test_openai_writer_turns_the_structured_answer_into_a_draft(openai_server, connection):
    openai_server.default = question_reply()

    draft = writer_for(openai_server, connection).write(KB, "recursion", "theoretical")

    assert draft.generator == "openai:test-model"
    assert draft.prompt == "What must every recursive function have so that it stops?"
    assert draft.options[0] == ("a", "A base case") and draft.correct_option == "a"
    assert draft.source_ids == tuple(res["id"] for res in topic_resources(KB, "recursion"))
    assert openai_server.count == 1
    sent = openai_server.requests[0]["body"]
    assert sent["response_format"]["json_schema"]["name"] == "theoretical_question"
    assert "Thinking recursively" in sent["messages"][1]["content"]  # grounded in the sources


def test_openai_writer_retries_an_answer_that_is_not_a_valid_question(openai_server, connection):
    openai_server.then(question_reply(correct_index=7), question_reply(options=["same", "same"]))
    openai_server.default = question_reply()

    draft = writer_for(openai_server, connection).write(KB, "recursion", "theoretical")

    assert draft.correct_option == "a"
    assert openai_server.count == 3


def test_openai_writer_gives_up_with_a_stage_error(openai_server, connection):
    openai_server.default = Reply(status=503, body={"error": {"message": "busy"}})
    with pytest.raises(StageError, match=r"after 2 attempts \(HTTP 503\)"):
        writer_for(openai_server, connection, max_retries=1).write(KB, "caching", "essay")
    assert openai_server.count == 2


def test_generation_waits_while_the_fleets_breaker_is_open_then_probes(openai_server, connection):
    openai_server.default = question_reply()
    breaker = provider_for(openai_server, connection).breaker
    for _ in range(5):  # the essays' calls failed: the breaker is open for its cooldown
        breaker.failed("HTTP 503")
    started = time.monotonic()

    draft = writer_for(openai_server, connection, sleep=time.sleep).write(
        KB, "recursion", "theoretical"
    )

    assert draft.generator == "openai:test-model"
    assert time.monotonic() - started >= 0.4  # no call before the cooldown (0.5 s) was over
    assert openai_server.count == 1  # the one probe, which closed the breaker
    assert breaker.state()["state"] == "closed"


def test_generation_is_counted_against_the_fleets_rate_limit(openai_server, connection):
    openai_server.default = question_reply()
    provider = provider_for(openai_server, connection, rpm=60)  # one call a second, fleet-wide

    writer_for(openai_server, connection, provider=provider).write(KB, "recursion", "theoretical")

    assert provider.limiter.acquire([100]).count == 0  # this second's call was the generation's
    assert openai_server.count == 1


# --- the operations API, through a real worker -------------------------------------------------


def wait_done(client: Api, operation_id: int, timeout: float = 30) -> dict:
    """Poll an operation until it is done."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/operations/{operation_id}").json()
        if body["done"]:
            return body
        assert time.monotonic() < deadline, f"operation {operation_id} not done: {body}"
        time.sleep(0.1)


def generate(client: Api, topic: str = "recursion", question_type: str = "theoretical"):
    """POST /operations for a question generation."""
    return client.post(
        "/operations",
        json={
            "operation_type": "question_generation",
            "params": {"topic": topic, "question_type": question_type},
        },
    )


def test_admin_generates_a_question_end_to_end(api_as, worker):
    admin = api_as("admin")

    response = generate(admin, "recursion", "essay")

    assert response.status_code == 202, response.text
    created = response.json()
    assert response.headers["Location"] == f"/api/v1/operations/{created['id']}"
    assert created["operation_type"] == "question_generation"
    assert created["status"] in ("pending", "processing") and created["done"] is False
    assert created["result"] is None and created["assessment_id"] is None

    done = wait_done(admin, created["id"])
    assert done["status"] == "completed" and done["progress"] == 100
    assert done["error_message"] is None
    assert done["result"] == generate_offline(KB, "recursion", "essay").to_dict()
    assert set(done["result"]) == {
        "type", "prompt", "options", "correct_option", "weight", "topic", "key_concepts",
        "source_ids", "generator",
    }  # fmt: skip

    events = admin.get("/events/recent?hours=1").json()["events"]
    mine = [e for e in events if e["metadata"]["operation_id"] == created["id"]]
    assert [e["status"] for e in reversed(mine)] == ["pending", "processing", "completed"]
    entries = admin.get("/audit?action=operation.created").json()["entries"]
    [entry] = [e for e in entries if e["entity_id"] == str(created["id"])]
    assert entry["details"] == {
        "operation_type": "question_generation",
        "params": {"topic": "recursion", "question_type": "essay"},
    }


def test_students_cannot_start_operations(api):
    response = generate(api)
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"operation_type": "assessment_scoring",
          "params": {"topic": "recursion", "question_type": "essay"}}, {"operation_type"}),
        ({"operation_type": "question_generation"}, {"params"}),
        ({"operation_type": "question_generation", "params": ["recursion"]}, {"params"}),
        ({"operation_type": "question_generation",
          "params": {"topic": "astrology", "question_type": "profile"}},
         {"params.topic", "params.question_type"}),
        ({"operation_type": "question_generation",
          "params": {"topic": "recursion", "question_type": "essay", "level": 3}},
         {"params.level"}),
        ({"operation_type": 7, "params": {"topic": None, "question_type": "essay"}},
         {"operation_type", "params.topic"}),
    ],
)  # fmt: skip
def test_invalid_operation_requests_are_422(api_as, body, fields):
    response = api_as("admin").post("/operations", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "VALIDATION_ERROR"
    assert {e["field"] for e in problem["errors"]} == fields


def test_gpt_generation_through_a_worker(
    db_url, tokens, worker_factory, openai_server, live_server
):
    openai_server.then(rubric_reply(content="{not json"))
    openai_server.default = question_reply()
    _, redis_url = worker_factory(
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=openai_server.base_url,
        OPENAI_MODEL="test-model",
        OPENAI_MAX_RETRIES="2",
    )
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url})
    response = app.test_client().post(
        "/api/v1/operations",
        json={
            "operation_type": "question_generation",
            "params": {"topic": "recursion", "question_type": "theoretical"},
        },
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert response.status_code == 202

    done = wait_done(Api(live_server.url, tokens["admin"]), response.get_json()["id"])

    assert done["status"] == "completed", done
    assert done["result"]["generator"] == "openai:test-model"
    assert done["result"]["prompt"] == "What must every recursive function have so that it stops?"
    assert done["result"]["correct_option"] == "a"
    assert openai_server.count == 2  # the malformed answer, then the good one


def test_gpt_generation_that_gives_up_fails_the_operation(
    db_url, tokens, worker_factory, openai_server, live_server
):
    openai_server.default = Reply(status=500, body={"error": {"message": "boom"}})
    _, redis_url = worker_factory(
        OPENAI_API_KEY="test-key", OPENAI_BASE_URL=openai_server.base_url, OPENAI_MAX_RETRIES="1"
    )
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url})
    response = app.test_client().post(
        "/api/v1/operations",
        json={
            "operation_type": "question_generation",
            "params": {"topic": "caching", "question_type": "essay"},
        },
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )

    done = wait_done(Api(live_server.url, tokens["admin"]), response.get_json()["id"])

    assert done["status"] == "failed" and done["result"] is None
    assert "OpenAI API" in done["error_message"] and "HTTP 500" in done["error_message"]
    assert openai_server.count == 2


# --- the admin page ----------------------------------------------------------------------------


@pytest.fixture()
def admin_client(app):
    """A test client logged in as the admin, with its CSRF token as `.csrf`."""
    client = app.test_client()
    client.csrf = log_in(client, ADMIN)
    return client


@pytest.fixture()
def scratch_set(app):
    """An empty question set with markup in its title, removed afterwards."""
    slug = f"scratch-{secrets.token_hex(3)}"
    with app.app_context():
        db.session.add(QuestionSet(slug=slug, title='Scratch <b>"set"</b>', description=""))
        db.session.commit()
    yield slug
    with app.app_context():
        set_id = db.session.scalar(select(QuestionSet.id).where(QuestionSet.slug == slug))
        db.session.execute(delete(Question).where(Question.question_set_id == set_id))
        db.session.execute(delete(QuestionSet).where(QuestionSet.id == set_id))
        db.session.commit()


def test_question_sets_page_lists_sets_with_their_questions(admin_client):
    page = admin_client.get("/admin/question-sets")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Python basics" in html and "Web APIs" in html
    assert 'data-testid="question-python-basics-7"' in html
    assert "Multiple choice" in html and "Essay" in html and "About you" in html
    assert "version 1 · 8 questions · 14 points" in html
    assert '<option value="recursion">recursion</option>' in html
    assert '<option value="classes-oop">classes and OOP</option>' in html
    assert '<option value="essay">Essay</option>' in html
    assert 'name="csrf_token"' in html


def test_students_cannot_open_the_question_sets_page(app):
    client = app.test_client()
    log_in(client, STUDENT)
    assert client.get("/admin/question-sets").status_code == 403


def test_page_generates_a_question_polls_it_and_adds_it_to_a_set(
    app, admin_client, scratch_set, worker
):
    started = admin_client.post(
        "/admin/question-sets/generations",
        data={"topic": "json", "question_type": "theoretical", "csrf_token": admin_client.csrf},
    )
    assert started.status_code == 302
    page = admin_client.get(started.headers["Location"]).get_data(as_text=True)
    assert "Generating a multiple choice question on JSON" in page
    # The form remembers what was just generated, ready for another one like it.
    assert '<option selected value="json">' in page
    assert '<option selected value="theoretical">' in page
    operation_id = int(re.search(r'id="generation-(\d+)"', page).group(1))
    poll_url = f"/admin/question-sets/generations/{operation_id}"

    deadline = time.monotonic() + 30
    while True:
        poll = admin_client.get(poll_url, headers={"HX-Request": "true"})
        if poll.status_code == 286:
            break
        assert poll.status_code == 200 and f'hx-get="{poll_url}"' in poll.get_data(as_text=True)
        assert time.monotonic() < deadline, "generation did not finish"
        time.sleep(0.1)
    final = poll.get_data(as_text=True)
    assert "hx-get" not in final  # the finished fragment stops polling
    draft = generate_offline(KB, "json", "theoretical")
    assert draft.prompt in final and "Correct answer" in final
    assert "Add to Scratch &lt;b&gt;&#34;set&#34;&lt;/b&gt;" in final  # escaped
    assert "<b>" not in final

    added = admin_client.post(
        f"/admin/question-sets/{scratch_set}/questions",
        data={"operation_id": operation_id, "csrf_token": admin_client.csrf},
    )
    assert added.status_code == 302
    page = admin_client.get(added.headers["Location"]).get_data(as_text=True)
    assert "Added as question 1 of Scratch &lt;b&gt;" in page
    assert f'data-testid="question-{scratch_set}-1"' in page
    with app.app_context():
        question_set = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == scratch_set))
        assert question_set.version == 2
        [question] = question_set.questions
        assert (question.type, question.prompt, question.weight) == (
            "theoretical",
            draft.prompt,
            1.0,
        )
        assert question.correct_option == draft.correct_option
        assert question.options == draft.to_dict()["options"]
        entry = db.session.scalar(
            select(AuditEntry).where(AuditEntry.action == "question_set.question_added")
        )
        assert (entry.entity_type, entry.entity_id) == ("question_set", scratch_set)
        assert entry.details["operation_id"] == operation_id and entry.details["position"] == 1

    again = admin_client.post(
        f"/admin/question-sets/{scratch_set}/questions",
        data={"operation_id": operation_id, "csrf_token": admin_client.csrf},
        follow_redirects=True,
    )
    assert "already asks this question" in again.get_data(as_text=True)
    with app.app_context():
        question_set = db.session.scalar(select(QuestionSet).where(QuestionSet.slug == scratch_set))
        assert len(question_set.questions) == 1 and question_set.version == 2


def test_an_invalid_generation_form_is_refused(app, admin_client):
    response = admin_client.post(
        "/admin/question-sets/generations",
        data={"topic": "astrology", "question_type": "essay", "csrf_token": admin_client.csrf},
    )
    assert response.status_code == 422
    assert "Choose a topic and a question type" in response.get_data(as_text=True)
    with app.app_context():
        assert not db.session.scalar(select(func.count()).select_from(Operation))


def test_the_generation_form_needs_a_csrf_token(admin_client):
    response = admin_client.post(
        "/admin/question-sets/generations", data={"topic": "json", "question_type": "essay"}
    )
    assert response.status_code == 400
