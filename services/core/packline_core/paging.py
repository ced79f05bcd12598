"""Paged lists: every list answer holds at most ``limit`` items (a query parameter), in a fixed
order; when more follow, the answer's ``Link`` header names the next page (RFC 8288,
``<…?cursor=…>; rel="next"``). The cursor is opaque to clients: the sort key of the page's last
item, after which the next page starts (keyset paging: a page costs the same however deep)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request, Response

from packline_core.http_errors import invalid

Limit = Annotated[int, Query(ge=1, le=2000, description="At most this many items (a page).")]
Cursor = Annotated[
    str | None,
    Query(max_length=1000, description='From the previous answer\'s Link rel="next".'),
]


def make_cursor(key: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def read_cursor(cursor: str | None, parts: int) -> list[str] | None:
    """The sort key a cursor holds (``parts`` strings), None without one; 422 naming the
    query's ``cursor`` when it is not one this service gave."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != parts
        or not all(isinstance(part, str) and _storable(part) for part in key)
    ):
        raise invalid(["query", "cursor"], "not a cursor this list answered")
    return key


def instant_of(text: str) -> datetime:
    """A cursor's instant part (as the list wrote it with ``isoformat()``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid(["query", "cursor"], "not a cursor this list answered")
    return moment


def _storable(text: str) -> bool:
    """Text PostgreSQL can take: valid UTF-8 (no lone surrogate) without NUL."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def page(
    rows: Sequence[Any], limit: int, request: Request, response: Response, key: Any
) -> list[Any]:
    """The first ``limit`` of ``rows`` (fetched with ``LIMIT limit + 1``); when there were more,
    sets ``Link: <…>; rel="next"`` from ``key(last row)``, the sort key as strings."""
    shown = list(rows[:limit])
    if len(rows) > limit and shown:
        following = request.url.include_query_params(cursor=make_cursor(key(shown[-1])))
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return shown
