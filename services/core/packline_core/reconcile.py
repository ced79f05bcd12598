"""I3, checked: after the system goes quiet, invoicing's links, the calendar's package notes and
the matcher's read model say the same thing. ``packline-admin reconcile`` runs it against a live
system over the services' HTTP APIs (``GET /links`` on each)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

Link = tuple[str, str, str, str]  # appointment, invoice, line, state


@dataclass
class Reconciliation:
    links: int = 0
    pending: list[str] = field(default_factory=list)  # the matcher waits for an answer
    disagreements: list[str] = field(default_factory=list)

    @property
    def agreed(self) -> bool:
        return not self.disagreements and not self.pending


def _links(rows: list[dict[str, Any]]) -> set[Link]:
    return {
        (str(r["appointment_id"]), str(r["invoice_id"]), str(r["line_id"]), str(r["state"]))
        for r in rows
    }


async def reconcile(clients: Mapping[str, httpx.AsyncClient]) -> Reconciliation:
    """Compare the three services' links; ``clients`` by service name, each at its HTTP API."""
    seen: dict[str, set[Link]] = {}
    for name in ("invoicing", "calendar", "matcher"):
        seen[name] = _links(await every_page(clients[name], "/links"))
    result = Reconciliation(links=len(seen["invoicing"]))
    result.pending = sorted(
        f"matcher waits for an answer about appointment {a} on line {line}"
        for a, _, line, state in seen["matcher"]
        if state == "pending"
    )
    matcher = {link for link in seen["matcher"] if link[3] != "pending"}
    for name, theirs in (("calendar", seen["calendar"]), ("matcher", matcher)):
        for link in sorted(seen["invoicing"] - theirs):
            result.disagreements.append(f"invoicing has {_say(link)}; {name} does not")
        for link in sorted(theirs - seen["invoicing"]):
            result.disagreements.append(f"{name} has {_say(link)}; invoicing does not")
    return result


async def every_page(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """A paged list whole: each page's Link rel="next" is followed (packline_core.paging)."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    while url is not None:
        answer = await client.get(url)
        answer.raise_for_status()
        rows.extend(answer.json())
        following = answer.links.get("next")
        url = following["url"] if following else None
    return rows


def _say(link: Link) -> str:
    appointment, invoice, line, state = link
    return f"appointment {appointment} {state} to line {line} of invoice {invoice}"
