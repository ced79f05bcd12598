"""The matcher's handlers: keep the read model up to date from events, and after every change
that can matter, ask :func:`packline_matcher.decision.decide` and publish what it says."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentChanged,
    AppointmentDeleted,
    AppointmentEvent,
    AppointmentRescheduled,
    AttendanceRecorded,
)
from packline_contracts.catalogue import LocationDefined, PractitionerDefined
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    LineBookingRefused,
    LineBookingRequested,
    LineForfeited,
    LineLinked,
    LineUnlinked,
    LineUsed,
    LinkAppointment,
    LinkRefused,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PackageInvoiceVoided,
    PaymentRecorded,
    UnlinkAppointment,
    UnlinkReason,
)
from packline_contracts.matching import AppointmentNotMatched, CandidatePackage
from packline_contracts.types import Appointment as AppointmentSnapshot
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction

from packline_matcher import readmodel
from packline_matcher.decision import Appointment, Decision, Line, decide


def register_matching(consumer: MessageConsumer) -> None:
    # One patient's decisions never interleave, whichever replica owns which partition now: the
    # consumer locks every patient of a batch before applying it.
    consumer.serialise_by(lambda message: message.patient_id)
    consumer.handles(
        AppointmentBooked,
        AppointmentRescheduled,
        AppointmentChanged,
        AppointmentCancelled,
        AppointmentDeleted,
        AttendanceRecorded,
    )(appointment_changed)
    consumer.handles(PackageInvoiceIssued)(invoice_issued)
    consumer.handles(PaymentRecorded, PackageInvoiceRefunded)(invoice_redeemability)
    consumer.handles(PackageInvoiceVoided)(invoice_voided)
    consumer.handles(LineLinked)(line_linked)
    consumer.handles(LineUnlinked)(line_unlinked)
    consumer.handles(LineForfeited)(line_forfeited)
    consumer.handles(LineUsed)(line_used)
    consumer.handles(LinkRefused)(link_refused)
    consumer.handles(LineBookingRequested)(line_booking_requested)
    consumer.handles(LineBookingRefused)(line_booking_refused)


def register_directory(consumer: MessageConsumer) -> None:
    @consumer.handles(PractitionerDefined, LocationDefined)
    async def remember_name(
        tx: Transaction, envelope: Envelope[PractitionerDefined | LocationDefined]
    ) -> None:
        named = envelope.payload
        key = named.practitioner_id if isinstance(named, PractitionerDefined) else named.location_id
        await tx.conn.execute(
            "INSERT INTO names (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $2",
            key,
            named.name,
        )


# --- appointments -----------------------------------------------------------------------------


async def appointment_changed(tx: Transaction, envelope: Envelope[AppointmentEvent]) -> None:
    event = envelope.payload
    snapshot = event.appointment
    cancelled_at = event.cancelled_at if isinstance(event, AppointmentCancelled) else None
    # The row as stored, read back in the same round trip (None: an older version than ours).
    row = await tx.conn.fetchrow(
        "INSERT INTO appointments AS a (appointment_id, patient_id, version, practitioner_id,"
        " location_id, starts_at, fee_ids, status, source, cancelled_at, duration_minutes,"
        " snapshot, time_zone, hand_unlinked)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
        "  EXISTS (SELECT 1 FROM hand_unlinks WHERE appointment_id = $1))"
        " ON CONFLICT (appointment_id) DO UPDATE SET version = $3, practitioner_id = $4,"
        " location_id = $5, starts_at = $6, fee_ids = $7, status = $8, cancelled_at = $10,"
        " duration_minutes = $11, snapshot = $12, time_zone = $13, refused_line_ids = '{}'"
        f" WHERE a.version < $3 RETURNING {readmodel.APPOINTMENT_COLUMNS}",
        snapshot.appointment_id,
        snapshot.patient_id,
        snapshot.version,
        snapshot.practitioner_id,
        snapshot.location_id,
        snapshot.starts_at,
        snapshot.fee_ids,
        snapshot.status.value,
        snapshot.source.value,
        cancelled_at,
        snapshot.duration_minutes,
        snapshot.model_dump_json(),
        snapshot.time_zone,
    )
    if row is None:
        return  # an older version than we know: a replay changes nothing
    appointment = readmodel.to_appointment(row)
    await reconsider(
        tx, appointment, snapshot, rescheduled=isinstance(event, AppointmentRescheduled)
    )


async def reconsider(
    tx: Transaction,
    appointment: Appointment,
    snapshot: AppointmentSnapshot | None = None,
    *,
    rescheduled: bool = False,
    explain: bool = True,
) -> list[Line]:
    """Decide for one appointment and publish the outcome; returns the lines as they now are."""
    lines = await readmodel.lines_for(tx.conn, appointment)
    decision = decide(appointment, lines)
    if decision.explain:  # names only word the explanation: read them when there is one
        decision = decide(appointment, lines, await readmodel.names(tx.conn))
    snapshot = snapshot or await snapshot_of(tx, appointment)
    return await apply(tx, appointment, snapshot, decision, lines, rescheduled, explain)


async def snapshot_of(tx: Transaction, appointment: Appointment) -> AppointmentSnapshot:
    stored = await tx.conn.fetchval(
        "SELECT snapshot FROM appointments WHERE appointment_id = $1", appointment.appointment_id
    )
    return AppointmentSnapshot.model_validate_json(stored)


async def apply(
    tx: Transaction,
    appointment: Appointment,
    snapshot: AppointmentSnapshot,
    decision: Decision,
    lines: list[Line],
    rescheduled: bool,
    explain: bool,
) -> list[Line]:
    key = (appointment.appointment_id, appointment.version)
    if decision.unlink:
        line = decision.unlink.line
        tx.publish(
            UnlinkAppointment(
                patient_id=appointment.patient_id,
                invoice_id=line.invoice_id,
                line_id=line.line_id,
                appointment_id=appointment.appointment_id,
                appointment_version=appointment.version,
                reason=decision.unlink.reason,
                forfeit=decision.unlink.forfeit,
                forfeit_reason=decision.unlink.why,
            ),
            message_id=derived_id("unlink", *key, line.line_id),
        )
        await readmodel.set_line(tx.conn, line.line_id, "requested", appointment.appointment_id)
        lines = [replace(x, status="requested") if x.line_id == line.line_id else x for x in lines]
    target = decision.link.line if decision.link else (decision.keep if rescheduled else None)
    if target is not None:
        tx.publish(
            LinkAppointment(
                patient_id=appointment.patient_id,
                invoice_id=target.invoice_id,
                line_id=target.line_id,
                appointment=snapshot,
                rule=decision.link.rule if decision.link else "rescheduled: keeps its line",
            ),
            message_id=derived_id("link", *key, target.line_id),
        )
        await readmodel.request_line(tx.conn, target.line_id, appointment.appointment_id)
        lines = [
            replace(x, status="requested", appointment_id=appointment.appointment_id)
            if x.line_id == target.line_id
            else x
            for x in lines
        ]
    if decision.explain and explain:
        candidates = [
            CandidatePackage(
                invoice_id=c.line.invoice_id,
                package_id=c.line.package_id,
                package_name=c.line.package_name,
                code=c.code,
                reason=c.reason,
            )
            for c in decision.explain.candidates
        ]
        tx.publish(
            AppointmentNotMatched(
                patient_id=appointment.patient_id,
                appointment_id=appointment.appointment_id,
                appointment_version=appointment.version,
                fee_ids=list(appointment.fee_ids),
                candidates=candidates,
                summary=decision.explain.summary,
            ),
            # An appointment unassigned by hand keeps its version: its explanation needs an id
            # of its own, or the outbox would take it for the earlier one and drop it.
            message_id=derived_id(
                "explain",
                *key,
                len(appointment.refused_line_ids),
                *(("unassigned",) if appointment.hand_unlinked else ()),
            ),
        )
        await tx.conn.execute(
            "INSERT INTO explanations (appointment_id, appointment_version, summary, candidates)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (appointment_id) DO UPDATE SET"
            " appointment_version = $2, summary = $3, candidates = $4, explained_at = now()",
            appointment.appointment_id,
            appointment.version,
            decision.explain.summary,
            json.dumps([c.model_dump(mode="json") for c in candidates]),
        )
    return lines


async def link_waiting(tx: Transaction, patient_id: str, now: datetime) -> None:
    """R12: a package bought or a line released: link the patient's upcoming unlinked
    appointments that now fit, earliest first (not those staff unlinked by hand). ``now`` is
    when that happened (the event's ``occurred_at``), so a replay links the same ones (I10);
    "upcoming" compares instants, which needs no time zone."""
    for appointment in await readmodel.waiting(tx.conn, patient_id, now):
        await reconsider(tx, appointment, explain=False)


# --- invoices and lines -----------------------------------------------------------------------


async def invoice_issued(tx: Transaction, envelope: Envelope[PackageInvoiceIssued]) -> None:
    invoice = envelope.payload.invoice
    inserted = await tx.conn.fetchval(
        "INSERT INTO invoices (invoice_id, patient_id, package_id, package_name, issued_at,"
        " redeemable, unpaid, late_cancel_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (invoice_id) DO NOTHING RETURNING 1",
        invoice.invoice_id,
        invoice.patient_id,
        invoice.package_id,
        invoice.package_name,
        invoice.issued_at,
        invoice.redeemable,
        unpaid(invoice.redeemable, invoice.status.value),
        invoice.late_cancel_policy.model_dump_json() if invoice.late_cancel_policy else None,
    )
    if not inserted:
        return
    await tx.conn.executemany(
        "INSERT INTO lines (line_id, invoice_id, patient_id, line_number, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, appointment_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            (
                line.line_id,
                invoice.invoice_id,
                invoice.patient_id,
                line.line_number,
                line.fee_id,
                line.practitioners.ids,
                line.locations.ids,
                line.valid_from,
                line.valid_until,
                # The read model's words: a booking requested is "requested"; open, linked,
                # used and forfeited are the same.
                "requested" if line.status.value == "booking_requested" else line.status.value,
                line.appointment_id,
            )
            for line in invoice.lines
        ],
    )
    await link_waiting(tx, invoice.patient_id, envelope.occurred_at)


def unpaid(redeemable: bool, status: str) -> bool:
    return not redeemable and status not in ("void", "refunded")


async def invoice_redeemability(
    tx: Transaction, envelope: Envelope[PaymentRecorded | PackageInvoiceRefunded]
) -> None:
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE invoices SET redeemable = $2, unpaid = $3 WHERE invoice_id = $1",
        event.invoice_id,
        event.redeemable,
        unpaid(event.redeemable, event.status.value),
    )
    if event.redeemable:
        await link_waiting(tx, event.patient_id, envelope.occurred_at)


async def invoice_voided(tx: Transaction, envelope: Envelope[PackageInvoiceVoided]) -> None:
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE invoices SET redeemable = false, unpaid = false WHERE invoice_id = $1",
        event.invoice_id,
    )


async def line_linked(tx: Transaction, envelope: Envelope[LineLinked]) -> None:
    event = envelope.payload
    # The appointment may have moved on while the link was on its way (cancelled, changed,
    # moved): decide again now that the line is known to hold it.
    appointment = await readmodel.link_line(tx.conn, event.line.line_id, event.appointment_id)
    if appointment is not None and appointment.version != event.appointment_version:
        moved = appointment.starts_at != event.line.appointment_starts_at
        await reconsider(tx, appointment, rescheduled=moved, explain=False)


async def line_unlinked(tx: Transaction, envelope: Envelope[LineUnlinked]) -> None:
    event = envelope.payload
    await readmodel.set_line(tx.conn, event.line.line_id, "open", None)
    if event.reason == UnlinkReason.INVOICE_VOIDED:
        # Invoicing releases a void invoice's lines before it announces the void: the invoice
        # must not look redeemable to the appointments those lines held (R13).
        await tx.conn.execute(
            "UPDATE invoices SET redeemable = false, unpaid = false WHERE invoice_id = $1",
            event.invoice_id,
        )
    if event.reason == UnlinkReason.UNASSIGNED_BY_STAFF:
        await readmodel.remember_hand_unlink(tx.conn, event.appointment_id)
        unassigned = await readmodel.appointment(tx.conn, event.appointment_id)
        if unassigned is not None:  # say why it stays unlinked (R7); not yet booked: on booking
            await reconsider(tx, unassigned)
    # R12 / R13: the line is free again, and a voided invoice's appointments look elsewhere.
    await link_waiting(tx, event.patient_id, envelope.occurred_at)


async def line_forfeited(tx: Transaction, envelope: Envelope[LineForfeited]) -> None:
    event = envelope.payload
    await readmodel.set_line(tx.conn, event.line.line_id, "forfeited", event.appointment_id)


async def line_used(tx: Transaction, envelope: Envelope[LineUsed]) -> None:
    # Final, whatever the read model thought (even a release it asked for: invoicing refuses to
    # release a used line). Nothing follows a used line, so a late LineUsed is never stale.
    event = envelope.payload
    await readmodel.set_line(tx.conn, event.line.line_id, "used", event.appointment_id)


async def link_refused(tx: Transaction, envelope: Envelope[LinkRefused]) -> None:
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE lines SET status = 'open', appointment_id = NULL"
        " WHERE line_id = $1 AND status = 'requested' AND appointment_id = $2",
        event.line_id,
        event.appointment_id,
    )
    await tx.conn.execute(
        "UPDATE appointments SET refused_line_ids = array_append(refused_line_ids, $2)"
        " WHERE appointment_id = $1 AND version = $3",
        event.appointment_id,
        event.line_id,
        event.appointment_version,
    )
    appointment = await readmodel.appointment(tx.conn, event.appointment_id)
    if appointment is not None and appointment.version == event.appointment_version:
        await reconsider(tx, appointment)  # the next line, or the explanation (I8)


async def line_booking_requested(tx: Transaction, envelope: Envelope[LineBookingRequested]) -> None:
    event = envelope.payload
    await readmodel.set_line(tx.conn, event.line.line_id, "requested", event.appointment_id)
    await tx.conn.execute(
        "INSERT INTO invoice_booking_requests (appointment_id) VALUES ($1) ON CONFLICT DO NOTHING",
        event.appointment_id,
    )


async def line_booking_refused(tx: Transaction, envelope: Envelope[LineBookingRefused]) -> None:
    event = envelope.payload
    await readmodel.set_line(tx.conn, event.line.line_id, "open", None)
    # The request ended without a link: refused by the calendar (its appointment never exists),
    # or released after no answer (timeout or staff). A released request's appointment may still
    # be booked late; staff were told the line is free again, so the matcher must not link that
    # appointment on its own, to this line or another: remembered like a staff unlink (R8),
    # whichever topic reaches us first.
    await readmodel.remember_hand_unlink(tx.conn, event.appointment_id)
    await link_waiting(tx, event.patient_id, envelope.occurred_at)
