"""A batch of the matcher's messages folded through :func:`decide`, with no I/O.

The handler loads what decides for the whole batch in two queries (the appointments the messages
name and their patients' lines for those appointments' fees), folds the messages through
:func:`fold` in their order, then writes what changed in one statement and publishes what the
fold said. Everything a decision implies lives here: re-linking a moved appointment, which
explanation to give and when to forget it, an appointment booked from an invoice line waiting for
invoicing, and the lines the matcher has asked to link.

Folding a batch at once says exactly what folding its messages one at a time says (a property
test checks it): the batch size is only a matter of speed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from uuid import UUID

from packline_contracts.appointments import (
    AppointmentCancelled,
    AppointmentDeleted,
    AppointmentEvent,
    AppointmentRescheduled,
)
from packline_contracts.envelope import Message
from packline_contracts.ids import derived_id
from packline_contracts.invoices import LineLinked, LinkAppointment, UnlinkAppointment
from packline_contracts.matching import AppointmentNotMatched, CandidatePackage
from packline_contracts.types import Appointment as AppointmentSnapshot

from packline_matcher.decision import Appointment, Decision, Line, decide


@dataclass(frozen=True)
class Reconsider:
    """Decide again about a known appointment: its line was refused or released, a package
    became usable (R12), staff unassigned it (R7)."""

    appointment_id: UUID
    explain: bool = True


Input = AppointmentEvent | LineLinked | Reconsider


@dataclass(frozen=True)
class Stored:
    """An appointment as the read model keeps it, with the snapshot sent in link commands."""

    appointment: Appointment
    snapshot: str  # JSON of packline_contracts.types.Appointment


@dataclass(frozen=True)
class Explanation:
    appointment_version: int
    summary: str
    candidates: tuple[CandidatePackage, ...]

    def candidates_json(self) -> str:
        return json.dumps([c.model_dump(mode="json") for c in self.candidates])


@dataclass
class State:
    """What the fold reads and changes: the batch's appointments and the lines their patients
    may use (their own, and those of packages shared with them: R18 household)."""

    appointments: dict[UUID, Stored] = field(default_factory=dict)
    # Appointments not stored yet: whether staff unassigned them by hand (R8) and whether
    # invoicing has announced the booking from a line (then it is not awaiting invoicing).
    hand_unlinked: frozenset[UUID] = frozenset()
    invoice_requested: frozenset[UUID] = frozenset()
    # Each line once, and which of them each patient may use: a shared package's line taken
    # for one member of a household is taken for all of them in the same batch.
    lines: dict[UUID, Line] = field(default_factory=dict)
    holders: dict[str, list[UUID]] = field(default_factory=dict)
    # What changed, to be written: appointments and lines by id, explanations (None: forget).
    changed_appointments: set[UUID] = field(default_factory=set)
    changed_lines: dict[UUID, Line] = field(default_factory=dict)
    explanations: dict[UUID, Explanation | None] = field(default_factory=dict)

    def copy(self) -> State:
        return replace(
            self,
            appointments=dict(self.appointments),
            lines=dict(self.lines),
            holders={patient: list(ids) for patient, ids in self.holders.items()},
            changed_appointments=set(self.changed_appointments),
            changed_lines=dict(self.changed_lines),
            explanations=dict(self.explanations),
        )

    def hold(self, patient_id: str, line: Line) -> None:
        """``patient_id`` may use ``line`` (theirs, or shared with them)."""
        self.lines.setdefault(line.line_id, line)
        held = self.holders.setdefault(patient_id, [])
        if line.line_id not in held:
            held.append(line.line_id)

    def patient_lines(self, patient_id: str) -> list[Line]:
        return [self.lines[i] for i in self.holders.get(patient_id, ())]

    def change_line(self, line: Line, **changes: object) -> None:
        """The line as the fold has it now, changed."""
        changed = replace(self.lines.get(line.line_id, line), **changes)  # type: ignore[arg-type]
        self.lines[line.line_id] = changed
        self.changed_lines[line.line_id] = changed


@dataclass(frozen=True)
class Publish:
    message: Message
    message_id: UUID


def fold(
    state: State, inputs: Sequence[Input], names: Mapping[str, str] | None = None
) -> tuple[State, list[list[Publish]]]:
    """The state after ``inputs``, and what to publish for each input (in order)."""
    state = state.copy()
    said = [step(state, message, names or {}) for message in inputs]
    return state, said


def explains(said: Sequence[Sequence[Publish]]) -> bool:
    """Whether any explanation was given (its wording needs the practitioners' and locations'
    names, which are read only then)."""
    return any(isinstance(p.message, AppointmentNotMatched) for out in said for p in out)


def step(state: State, message: Input, names: Mapping[str, str]) -> list[Publish]:
    if isinstance(message, AppointmentEvent):
        return appointment_changed(state, message, names)
    if isinstance(message, LineLinked):
        return line_linked(state, message, names)
    stored = state.appointments.get(message.appointment_id)
    if stored is None:
        return []
    return reconsider(state, stored, names, explain=message.explain)


def appointment_changed(
    state: State, event: AppointmentEvent, names: Mapping[str, str]
) -> list[Publish]:
    snapshot = event.appointment
    known = state.appointments.get(snapshot.appointment_id)
    if known is not None and known.appointment.version >= snapshot.version:
        return []  # an older version than we know: a replay changes nothing
    stored = Stored(
        Appointment(
            appointment_id=snapshot.appointment_id,
            version=snapshot.version,
            patient_id=snapshot.patient_id,
            practitioner_id=snapshot.practitioner_id,
            location_id=snapshot.location_id,
            starts_at=snapshot.starts_at,
            fee_ids=tuple(snapshot.fee_ids),
            status=snapshot.status,
            source=snapshot.source,
            hand_unlinked=(
                known.appointment.hand_unlinked
                if known is not None
                else snapshot.appointment_id in state.hand_unlinked
            ),
            awaiting_invoice=(
                snapshot.source.value == "invoice"
                and snapshot.appointment_id not in state.invoice_requested
            ),
            cancelled_at=event.cancelled_at if isinstance(event, AppointmentCancelled) else None,
            ended_by=ended_by(event),
            time_zone=snapshot.time_zone,
        ),
        snapshot.model_dump_json(),
    )
    state.appointments[snapshot.appointment_id] = stored
    state.changed_appointments.add(snapshot.appointment_id)
    rescheduled = isinstance(event, AppointmentRescheduled)
    return reconsider(state, stored, names, rescheduled=rescheduled, parsed=snapshot)


def ended_by(event: AppointmentEvent) -> str | None:
    if isinstance(event, AppointmentCancelled):
        return event.cancelled_by
    if isinstance(event, AppointmentDeleted):
        return event.deleted_by
    return None


def line_linked(state: State, event: LineLinked, names: Mapping[str, str]) -> list[Publish]:
    linked = state.lines.get(event.line.line_id)
    if linked is not None:
        state.change_line(linked, status="linked", appointment_id=event.appointment_id)
    state.explanations[event.appointment_id] = None  # it holds a line: no reason to give
    stored = state.appointments.get(event.appointment_id)
    # The appointment may have moved on while the link was on its way (cancelled, changed,
    # moved): decide again now that the line is known to hold it.
    if stored is None or stored.appointment.version == event.appointment_version:
        return []
    moved = stored.appointment.starts_at != event.line.appointment_starts_at
    return reconsider(state, stored, names, rescheduled=moved, explain=False)


def reconsider(
    state: State,
    stored: Stored,
    names: Mapping[str, str],
    *,
    rescheduled: bool = False,
    explain: bool = True,
    parsed: AppointmentSnapshot | None = None,
) -> list[Publish]:
    appointment = stored.appointment
    decision = decide(appointment, state.patient_lines(appointment.patient_id), names)
    return carry_out(state, stored, decision, rescheduled, explain, parsed)


def carry_out(
    state: State,
    stored: Stored,
    decision: Decision,
    rescheduled: bool,
    explain: bool,
    parsed: AppointmentSnapshot | None,
) -> list[Publish]:
    """What ``decision`` publishes, and the lines and explanation it leaves."""
    appointment = stored.appointment
    key = (appointment.appointment_id, appointment.version)
    patient = appointment.patient_id
    said: list[Publish] = []
    if decision.unlink:
        line = decision.unlink.line
        said.append(
            Publish(
                UnlinkAppointment(
                    patient_id=patient,
                    invoice_id=line.invoice_id,
                    line_id=line.line_id,
                    appointment_id=appointment.appointment_id,
                    appointment_version=appointment.version,
                    reason=decision.unlink.reason,
                    forfeit=decision.unlink.forfeit,
                    forfeit_reason=decision.unlink.why,
                    changed_by=decision.unlink.by,
                ),
                derived_id("unlink", *key, line.line_id),
            )
        )
        state.change_line(line, status="requested")
    target = decision.link.line if decision.link else (decision.keep if rescheduled else None)
    if target is not None:
        snapshot = parsed or AppointmentSnapshot.model_validate_json(stored.snapshot)
        said.append(
            Publish(
                LinkAppointment(
                    patient_id=patient,
                    invoice_id=target.invoice_id,
                    line_id=target.line_id,
                    appointment=snapshot,
                    rule=decision.link.rule if decision.link else "rescheduled: keeps its line",
                ),
                derived_id("link", *key, target.line_id),
            )
        )
        state.change_line(target, status="requested", appointment_id=appointment.appointment_id)
        state.explanations[appointment.appointment_id] = None
    if decision.explain and explain:
        candidates = tuple(
            CandidatePackage(
                invoice_id=c.line.invoice_id,
                package_id=c.line.package_id,
                package_name=c.line.package_name,
                code=c.code,
                reason=c.reason,
            )
            for c in decision.explain.candidates
        )
        said.append(
            Publish(
                AppointmentNotMatched(
                    patient_id=patient,
                    appointment_id=appointment.appointment_id,
                    appointment_version=appointment.version,
                    fee_ids=list(appointment.fee_ids),
                    candidates=list(candidates),
                    summary=decision.explain.summary,
                ),
                # An appointment unassigned by hand keeps its version: its explanation needs an
                # id of its own, or the outbox would take it for the earlier one and drop it.
                derived_id(
                    "explain",
                    *key,
                    len(appointment.refused_line_ids),
                    *(("unassigned",) if appointment.hand_unlinked else ()),
                ),
            )
        )
        state.explanations[appointment.appointment_id] = Explanation(
            appointment.version, decision.explain.summary, candidates
        )
    return said
