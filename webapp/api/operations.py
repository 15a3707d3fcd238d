"""Operations: long-running work a client polls."""

from __future__ import annotations

from flask import make_response, url_for
from flask_login import current_user

from webapp.api import api_bp, json_body, require_admin
from webapp.errors import Forbidden, OperationNotFound
from webapp.extensions import db
from webapp.models import Assessment, Operation
from webapp.models.base import isoformat
from webapp.services import generation
from webapp.services.integrations import may_view


def get_operation(operation_id: int) -> Operation:
    """The operation if the caller may see it: 404 if it doesn't exist, 403 if it isn't theirs."""
    operation = db.session.get(Operation, operation_id)
    if operation is None:
        raise OperationNotFound(f"No operation has id {operation_id}.")
    if operation.user_id != current_user.id and not _sees_assessment_of(operation):
        raise Forbidden("This operation belongs to another account.")
    return operation


def _sees_assessment_of(operation: Operation) -> bool:
    """Admins see every operation, an integration those on its students' assessments."""
    if current_user.is_admin:
        return True
    assessment = db.session.get(Assessment, operation.assessment_id or 0)
    return assessment is not None and may_view(current_user, assessment.user)


def operation_to_dict(operation: Operation) -> dict:
    """The API's view of an operation: exactly one of result / error_message once done."""
    done = operation.done
    return {
        "id": operation.id,
        "operation_type": operation.operation_type,
        "status": operation.status,
        "progress": 100 if done else operation.progress,
        "done": done,
        "result": operation.result if done and operation.error_message is None else None,
        "error_message": operation.error_message if done else None,
        "assessment_id": operation.assessment_id,
        "created_at": isoformat(operation.created_at),
        "updated_at": isoformat(operation.updated_at),
    }


@api_bp.get("/operations/<int:operation_id>")
def show_operation(operation_id: int):
    """Poll an operation."""
    return operation_to_dict(get_operation(operation_id))


@api_bp.post("/operations")
def create_operation():
    """Admins: start a question_generation operation -> 202 with its Location; poll it there."""
    require_admin()
    params = generation.parse_request(json_body())
    operation = generation.start_generation(current_user, params)
    response = make_response(operation_to_dict(operation), 202)
    response.headers["Location"] = url_for("api.show_operation", operation_id=operation.id)
    return response
