"""Demo data: two accounts and two question sets mixing every question type."""

from __future__ import annotations

from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Question, QuestionSet, Role, User

DEMO_ADMIN = ("admin@example.com", "admin-password")
DEMO_STUDENT = ("student@example.com", "student-password")


def _tf(prompt: str, options: list[str], correct: int, topic: str, weight: float = 1.0) -> dict:
    """A theoretical question with options a, b, c, ..."""
    ids = "abcdefgh"
    return {
        "type": "theoretical",
        "prompt": prompt,
        "options": [{"id": ids[i], "text": text} for i, text in enumerate(options)],
        "correct_option": ids[correct],
        "topic": topic,
        "weight": weight,
    }


QUESTION_SETS = [
    {
        "slug": "python-basics",
        "title": "Python basics",
        "description": "Core Python: types, control flow, functions, data structures and errors.",
        "questions": [
            _tf("What does `len({'a': 1, 'b': 2})` return?", ["1", "2", "4", "An error"], 1,
                "data-structures"),
            _tf("Which keyword defines a generator function's output?",
                ["return", "yield", "emit", "async"], 1, "iterators-generators"),
            _tf("What is the type of `(1,)`?", ["int", "list", "tuple", "set"], 2,
                "variables-types"),
            _tf("Which statement handles an exception?",
                ["try/except", "if/else", "with", "assert"], 0, "exceptions"),
            _tf("What does `[x * 2 for x in range(3)]` evaluate to?",
                ["[0, 2, 4]", "[2, 4, 6]", "[0, 1, 2]", "(0, 2, 4)"], 0, "comprehensions"),
            {"type": "profile", "prompt": "How long have you been programming in Python?",
             "topic": "", "weight": 1.0},
            {"type": "essay", "weight": 4.0, "topic": "recursion",
             "prompt": "Explain how recursion works in Python and when you would avoid it.",
             "key_concepts": ["base case", "recursive call", "call stack", "recursion limit",
                              "iteration"]},
            {"type": "essay", "weight": 4.0, "topic": "classes-oop",
             "prompt": "Describe how classes and instances work in Python, with an example.",
             "key_concepts": ["class", "instance", "__init__", "self", "method", "attribute"]},
        ],
    },
    {
        "slug": "web-apis",
        "title": "Web APIs",
        "description": "HTTP, REST design, idempotency, caching, webhooks and API security.",
        "questions": [
            _tf("Which HTTP method is idempotent by definition?",
                ["POST", "PUT", "PATCH", "CONNECT"], 1, "http-methods"),
            _tf("Which status code means the client should slow down?",
                ["403", "409", "429", "503"], 2, "rate-limiting"),
            _tf("Which header lets a client revalidate a cached response cheaply?",
                ["ETag", "Server", "Via", "Accept"], 0, "caching"),
            _tf("What is the main defence against CSRF in a form-based app?",
                ["A CSRF token checked on every state-changing request", "HTTPS alone",
                 "Escaping HTML", "Long passwords"], 0, "security"),
            {"type": "profile", "prompt": "Which APIs have you built or integrated with?",
             "topic": "", "weight": 1.0},
            {"type": "essay", "weight": 5.0, "topic": "idempotency",
             "prompt": "Explain what makes an HTTP API idempotent and why it matters for retries.",
             "key_concepts": ["idempotency key", "retry", "side effect", "PUT", "POST",
                              "duplicate"]},
            {"type": "essay", "weight": 5.0, "topic": "webhooks",
             "prompt": "How should a service deliver webhooks reliably and securely?",
             "key_concepts": ["signature", "retry", "backoff", "timeout", "idempotent",
                              "secret"]},
        ],
    },
]  # fmt: skip


def ensure_user(email: str, password: str, role: Role) -> tuple[User, bool]:
    """The user with this email, created with `password` and `role` if missing."""
    user = db.session.scalar(select(User).where(User.email == email))
    if user is not None:
        return user, False
    user = User(email=email, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user, True


def seed_demo() -> list[str]:
    """Create the demo accounts and question sets unless they exist; returns what it did."""
    done = []
    for (email, password), role in ((DEMO_ADMIN, Role.ADMIN), (DEMO_STUDENT, Role.STUDENT)):
        _, created = ensure_user(email, password, role)
        if created:
            done.append(f"created {role} {email}")
    for spec in QUESTION_SETS:
        if db.session.scalar(select(QuestionSet).where(QuestionSet.slug == spec["slug"])):
            continue
        question_set = QuestionSet(
            slug=spec["slug"], title=spec["title"], description=spec["description"]
        )
        for position, q in enumerate(spec["questions"], start=1):
            question_set.questions.append(
                Question(
                    position=position,
                    type=q["type"],
                    prompt=q["prompt"],
                    options=q.get("options"),
                    correct_option=q.get("correct_option"),
                    weight=q["weight"],
                    topic=q.get("topic", ""),
                    key_concepts=q.get("key_concepts", []),
                )
            )
        db.session.add(question_set)
        done.append(f"created question set {spec['slug']}")
    db.session.commit()
    return done
