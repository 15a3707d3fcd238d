"""The JSON API under /api/v1: one blueprint, a module of routes per resource, and the models
(`schemas`) that validate, serialize and document them."""

from webapp.api import (
    assessments,
    audit,
    integrations,
    openapi,
    operations,
    question_sets,
    webhooks,
)
from webapp.api.blueprint import api_bp

__all__ = [
    "api_bp",
    "assessments",
    "audit",
    "integrations",
    "openapi",
    "operations",
    "question_sets",
    "webhooks",
]
