"""Field types the API's models share: what a schema can say about a value, said once.

Each type is both the check (pydantic runs it on the request) and the documentation (its JSON
Schema lands in /api/v1/openapi.json). Where the HTML forms parse the same kind of value, the
parser in `webapp.request_values` runs here too, so both answer with the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import StrictBool as StrictBool
from pydantic import StrictInt as StrictInt
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from webapp.errors import ValidationFailed
from webapp.models.base import utcnow
from webapp.request_values import MAX_ID, parse_moment, parse_whole_number

# PostgreSQL cannot store NUL; JSON Schema says so with a pattern. (Lone surrogates, which JSON
# can spell but no encoding holds, are refused before validation: see webapp/api/blueprint.py.)
NUL_FREE = r"^[^\x00]*$"


def text(max_length: int, *, min_length: int = 0, **extra: Any) -> Any:
    """A string of at most `max_length` characters without NUL."""
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length, pattern=NUL_FREE, **extra)
    ]


def _parsed_by(parse: Callable[[Any], Any]) -> BeforeValidator:
    """Run a `request_values` parser as a validator: its ValidationFailed message is the error."""

    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except ValidationFailed as exc:
            message = (exc.errors or [{"message": exc.detail}])[0]["message"]
            raise PydanticCustomError("invalid", message) from None

    return BeforeValidator(validate)


def whole_number(minimum: int, maximum: int) -> Any:
    """A query parameter holding an integer from `minimum` to `maximum` in ASCII digits."""

    def parse(value: Any) -> Any:
        if isinstance(value, int):
            value = str(value)
        return parse_whole_number(value, "value", minimum=minimum, maximum=maximum)

    return Annotated[int, Field(ge=minimum, le=maximum), _parsed_by(parse)]


# A record id: INTEGER columns hold up to 2**31 - 1 (the `<int:>` URL converter agrees).
Id = whole_number(1, MAX_ID)
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def _not_in_future(moment: datetime) -> datetime:
    if moment > utcnow():
        raise PydanticCustomError("future", "must not be in the future")
    return moment


# An ISO 8601 moment in the past; no zone means UTC.
PastMoment = Annotated[
    datetime,
    Field(json_schema_extra={"format": "date-time"}),
    _parsed_by(lambda value: parse_moment(value, "value")),
    AfterValidator(_not_in_future),
]


class Params(BaseModel):
    """Path or query parameters: unknown query parameters are ignored."""


NO_NUL_KEYS = {"propertyNames": {"pattern": NUL_FREE}}
# Any JSON value whose strings and keys hold no NUL (refused before validation, see above).
NulFreeJson = TypeAliasType(
    "NulFreeJson",
    Annotated[str, Field(pattern=NUL_FREE)]
    | int
    | float
    | bool
    | list["NulFreeJson"]
    | Annotated[dict[str, "NulFreeJson"], Field(json_schema_extra=NO_NUL_KEYS)]
    | None,
)


class Body(BaseModel):
    """A JSON request body; unknown fields are ignored, but their text is held to NUL_FREE too."""

    model_config = ConfigDict(extra="allow", json_schema_extra=NO_NUL_KEYS)
    __pydantic_extra__: dict[str, NulFreeJson]


class ClosedBody(BaseModel):
    """A JSON request body whose unknown fields are refused (`additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=NO_NUL_KEYS)


class Out(BaseModel):
    """A JSON answer: exactly these fields (a served field the document lacks fails the tests)."""

    model_config = ConfigDict(extra="forbid")
