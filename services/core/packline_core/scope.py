"""Whose records a caller may see and change: the clinics (locations) of their token, and for a
practitioner their own calendar (issue #19 point 2; docs/identity.md, "Clinic scope").

The unit of access is the **patient**. A patient is *seen at* a location when a service holds a
record placing them there: an appointment at it, a package invoice sold at or restricted to it,
or the patient directory naming it. Staff may read and change a patient seen at one of their
clinics, with everything the service holds of them (a patient seen at Northside and Southside is
visible to both, their whole story); a patient seen only elsewhere is refused (403). A patient
seen at no location yet (a new patient, or one whose records name no clinic) hides nothing and
is visible to all, so the first clinic can book them. A practitioner reads only their own
appointments. A static token, and the open development API, see every clinic.

The rules here are pure: each service computes where a patient is seen from its own tables
(its ``seen_at`` query) and asks :func:`sees_patient`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from packline_core.auth import caller
from packline_core.identity import Staff


@dataclass(frozen=True)
class Scope:
    """What a caller may see: ``locations`` None means every clinic."""

    locations: frozenset[str] | None = None
    practitioner_id: str | None = None  # set: only this practitioner's appointments

    @property
    def everywhere(self) -> bool:
        return self.locations is None and self.practitioner_id is None

    def location_list(self) -> list[str] | None:
        """The locations for a SQL ``= ANY($n)`` (None: no restriction)."""
        return sorted(self.locations) if self.locations is not None else None


EVERYWHERE = Scope()


def scope_of(staff: Staff | None) -> Scope:
    if staff is None:
        return EVERYWHERE
    locations = frozenset(staff.clinics) if staff.clinics is not None else None
    return Scope(locations=locations, practitioner_id=staff.practitioner_id)


def request_scope(request: Request) -> Scope:
    return scope_of(caller(request))


# A route's parameter ``scope: CallerScope``: the verified caller's scope.
CallerScope = Annotated[Scope, Depends(request_scope)]


def sees_patient(scope: Scope, seen_at: Iterable[str]) -> bool:
    """Whether the caller may see a patient seen at ``seen_at`` (every location a record places
    them at): one of them is the caller's, or there is none yet."""
    if scope.locations is None:
        return True
    places = set(seen_at)
    return not places or not places.isdisjoint(scope.locations)


def sees_location(scope: Scope, location_id: str) -> bool:
    return scope.locations is None or location_id in scope.locations


def sees_practitioner(scope: Scope, practitioner_id: str) -> bool:
    return scope.practitioner_id is None or scope.practitioner_id == practitioner_id


def not_yours(what: str, seen_at: Iterable[str], scope: Scope) -> HTTPException:
    """403 for a record outside the caller's clinics, saying where it is (location ids only)."""
    places = ", ".join(sorted(set(seen_at))) or "no clinic"
    mine = ", ".join(sorted(scope.locations or ())) or "none"
    return HTTPException(403, f"{what} is seen at {places}, not at your clinics ({mine})")


def require_patient(scope: Scope, patient_id: str, seen_at: Iterable[str]) -> None:
    places = list(seen_at)
    if not sees_patient(scope, places):
        raise not_yours(f"patient {patient_id}", places, scope)


def require_location(scope: Scope, location_id: str, what: str = "location") -> None:
    if not sees_location(scope, location_id):
        raise not_yours(f"{what} {location_id}", [location_id], scope)


def require_practitioner(scope: Scope, practitioner_id: str) -> None:
    if not sees_practitioner(scope, practitioner_id):
        raise HTTPException(
            403,
            f"a practitioner sees their own calendar ({scope.practitioner_id}), "
            f"not {practitioner_id}'s",
        )
