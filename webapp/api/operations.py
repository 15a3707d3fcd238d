"""Operations: long-running work a client polls."""

from __future__ import annotations

from flask import make_response, url_for
from flask_login import current_user

from webapp.api.blueprint import admin_only, api_bp, problem_response
from webapp.api.schemas import NewOperation, OperationOut, OperationPath
from webapp.errors import Forbidden, OperationNotFound
from webapp.extensions import db
from webapp.models import Assessment, Operation
from webapp.services import generation
from webapp.services.integrations import may_view

ADMINS_ONLY = problem_response("FORBIDDEN: admins only.")


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


@api_bp.get(
    "/operations/<int:operation_id>",
    responses={
        200: OperationOut,
        404: problem_response("OPERATION_NOT_FOUND, or FORBIDDEN for another account's."),
    },
)
def show_operation(path: OperationPath):
    """Poll an operation."""
    return OperationOut.of(get_operation(path.operation_id)).model_dump(mode="json")


@api_bp.post("/operations", responses={202: OperationOut, 403: ADMINS_ONLY})
@admin_only
def create_operation(body: NewOperation):
    """Admins: start a question_generation operation: 202 with its Location; poll it there."""
    params = generation.GenerationParams(**body.params.model_dump())
    operation = generation.start_generation(current_user, params)
    response = make_response(OperationOut.of(operation).model_dump(mode="json"), 202)
    response.headers["Location"] = url_for("api.show_operation", operation_id=operation.id)
    return response
