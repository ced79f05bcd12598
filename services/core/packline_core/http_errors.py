"""HTTP answers for input the models let through but the database or the events cannot take, so
a client's request is refused with 422 naming the field, never answered with 500.

The HTTP models reuse the contracts' types, which already refuse such input; these handlers are
the one place that still catches what gets past them (a package stored before a limit existed,
a value only the database knows is out of range). They also render FastAPI's own 422 safely: its
default answer echoes the input, and input holding a lone surrogate cannot be encoded as UTF-8.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import structlog
from asyncpg.exceptions import _base as asyncpg_base
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from packline_contracts.envelope import InvalidMessage
from pydantic import ValidationError

log = structlog.get_logger(__name__)

_SURROGATES = re.compile(r"[\ud800-\udfff]")


def invalid(location: list[str | int], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own (and like its OpenAPI document says): ``detail`` is a list
    of problems, each with the location of the field it is about."""
    return HTTPException(422, [{"loc": location, "msg": message, "type": "value_error"}])


def install_error_answers(app: FastAPI) -> None:
    """Answer every refusal below with 422 and a FastAPI-shaped ``detail`` list."""
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _model_invalid)
    app.add_exception_handler(InvalidMessage, _message_invalid)
    app.add_exception_handler(asyncpg.exceptions.DataError, _database_refused)
    app.add_exception_handler(asyncpg.exceptions.CheckViolationError, _database_refused)
    # asyncpg's own refusal of an argument (an int beyond the column's range, say), before sending.
    app.add_exception_handler(asyncpg_base.DataError, _database_refused)


def _answer(problems: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": _printable(problems)}, status_code=422)


def _printable(node: Any) -> Any:
    """JSON that can always be encoded: no lone surrogates, no exception objects."""
    if isinstance(node, str):
        return _SURROGATES.sub("\ufffd", node)
    if isinstance(node, dict):
        return {str(key): _printable(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_printable(item) for item in node]
    if node is None or isinstance(node, bool | int | float):
        return node
    return _printable(str(node))


async def _request_invalid(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = []
    for problem in error.errors():
        problem = dict(problem)
        if "ctx" in problem:
            problem["ctx"] = {key: str(value) for key, value in problem["ctx"].items()}
        problems.append(problem)
    return _answer(jsonable_encoder(_printable(problems)))


async def _model_invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ValidationError)
    problems = [
        {"loc": list(problem["loc"]), "msg": problem["msg"], "type": problem["type"]}
        for problem in error.errors(include_url=False)
    ]
    log.info("request refused by a contract model", path=request.url.path, problems=problems)
    return _answer(problems)


async def _message_invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, InvalidMessage)
    problems = [
        {"loc": problem.field.split("."), "msg": problem.message, "type": "invalid_message"}
        for problem in error.errors
    ]
    log.info("request refused: its message would be invalid", path=request.url.path, error=error)
    return _answer(problems)


async def _database_refused(request: Request, error: Exception) -> JSONResponse:
    field = (
        getattr(error, "column_name", None)
        or getattr(error, "constraint_name", None)
        or _argument(str(error))
        or "value"
    )
    log.warning("request refused by the database", path=request.url.path, error=str(error))
    return _answer(
        [{"loc": [field], "msg": f"the database cannot store it: {error}", "type": "database"}]
    )


def _argument(message: str) -> str | None:
    found = re.search(r"query argument (\$\d+)", message)
    return f"query argument {found.group(1)}" if found else None
