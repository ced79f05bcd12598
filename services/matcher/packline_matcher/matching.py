"""The matcher's handlers: keep the read model up to date from events, and after every change
that can matter, fold it through :mod:`packline_matcher.fold` (which asks
:func:`packline_matcher.decision.decide`) and publish what it says."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentChanged,
    AppointmentDeleted,
    AppointmentRescheduled,
    AttendanceRecorded,
)
from packline_contracts.catalogue import LocationDefined, PractitionerDefined
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    InvoiceLine,
    LineBookingRefused,
    LineBookingRequested,
    LineForfeited,
    LineLinked,
    LineUnlinked,
    LineUsed,
    LinkRefused,
    PackageInvoiceExtended,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PackageInvoiceShared,
    PackageInvoiceToppedUp,
    PackageInvoiceVoided,
    PaymentRecorded,
    SessionsExpired,
    SessionsTransferred,
    UnlinkReason,
)
from packline_contracts.patients import PatientRegistered, PatientUpdated
from packline_core.consumer import MessageConsumer, lock
from packline_core.db import Connection
from packline_core.outbox import Transaction

from packline_matcher import fold, readmodel


def register_matching(consumer: MessageConsumer) -> None:
    # One patient's decisions never interleave, whichever replica owns which partition now: the
    # consumer locks every patient of a batch before applying it.
    consumer.serialise_by(lambda message: message.patient_id)
    consumer.handles_batch(
        AppointmentBooked,
        AppointmentRescheduled,
        AppointmentChanged,
        AppointmentCancelled,
        AppointmentDeleted,
        AttendanceRecorded,
        LineLinked,
    )(fold_batch)
    consumer.handles(PackageInvoiceIssued)(invoice_issued)
    consumer.handles(PaymentRecorded, PackageInvoiceRefunded)(invoice_redeemability)
    consumer.handles(PackageInvoiceVoided)(invoice_voided)
    consumer.handles(LineUnlinked)(line_unlinked)
    consumer.handles(LineForfeited)(line_forfeited)
    consumer.handles(LineUsed)(line_used)
    consumer.handles(LinkRefused)(link_refused)
    consumer.handles(LineBookingRequested)(line_booking_requested)
    consumer.handles(LineBookingRefused)(line_booking_refused)
    consumer.handles(PackageInvoiceExtended)(invoice_extended)
    consumer.handles(SessionsExpired)(sessions_expired)
    consumer.handles(PackageInvoiceToppedUp)(invoice_topped_up)
    consumer.handles(SessionsTransferred)(sessions_transferred)
    consumer.handles(PackageInvoiceShared)(invoice_shared)


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

    @consumer.handles(PatientRegistered, PatientUpdated)
    async def remember_patient(
        tx: Transaction, envelope: Envelope[PatientRegistered | PatientUpdated]
    ) -> None:
        # Whose a shared package is, in an explanation or a rule (R18 household).
        patient = envelope.payload
        await tx.conn.execute(
            "INSERT INTO patient_names (patient_id, name) VALUES ($1, $2)"
            " ON CONFLICT (patient_id) DO UPDATE SET name = $2",
            patient.patient_id,
            patient.name,
        )


# --- appointments and links: folded a batch at a time ------------------------------------------


async def fold_batch(conn: Connection, messages: list[tuple[Transaction, Envelope[Any]]]) -> None:
    """Appointment events and links, a batch's consecutive run at once (packline_matcher.fold)."""
    await run(conn, [(tx, envelope.payload) for tx, envelope in messages])


async def run(conn: Connection, inputs: Sequence[tuple[Transaction, fold.Input]]) -> None:
    """Load what decides for ``inputs``, fold them, write what changed, publish what was said
    (each in the name of the message it answers)."""
    messages = [message for _, message in inputs]
    loaded = await readmodel.load(conn, messages)
    state, said = fold.fold(loaded, messages)
    if fold.explains(said):  # names only word an explanation: read them when there is one
        state, said = fold.fold(loaded, messages, await readmodel.names(conn))
    await readmodel.save(conn, state)
    for (tx, _), publishes in zip(inputs, said, strict=True):
        for publish in publishes:
            tx.publish(publish.message, message_id=publish.message_id)


async def reconsider(tx: Transaction, *appointment_ids: UUID, explain: bool = True) -> None:
    """Decide again about these appointments, in this order."""
    if appointment_ids:
        await run(tx.conn, [(tx, fold.Reconsider(i, explain)) for i in appointment_ids])


async def link_waiting(
    tx: Transaction, patient_id: str, now: datetime, invoice_id: UUID | None = None
) -> None:
    """R12: a package bought or a line released: link the patient's upcoming unlinked
    appointments that now fit, earliest first (not those staff unlinked by hand), and those of
    the household the invoice is shared with (R18). ``now`` is when that happened (the event's
    ``occurred_at``), so a replay links the same ones (I10); "upcoming" compares instants, which
    needs no time zone."""
    patients = [patient_id]
    if invoice_id is not None:
        patients += await readmodel.household(tx.conn, invoice_id)
    await waiting_of(tx, patients, now)


async def waiting_of(tx: Transaction, patients: Sequence[str], now: datetime) -> None:
    if len(patients) > 1:  # another patient's decisions: under their lock too
        await lock(tx.conn, set(patients))
    waiting = [a for p in patients for a in await readmodel.waiting(tx.conn, p, now)]
    await reconsider(tx, *(a.appointment_id for a in waiting), explain=False)


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
    await insert_lines(tx.conn, invoice.invoice_id, invoice.patient_id, invoice.lines)
    await readmodel.set_household(tx.conn, invoice.invoice_id, invoice.shared_with)
    await link_waiting(tx, invoice.patient_id, envelope.occurred_at, invoice.invoice_id)


async def insert_lines(
    conn: Connection, invoice_id: UUID, patient_id: str, lines: Sequence[InvoiceLine]
) -> None:
    """An invoice's lines as invoicing announced them (at sale, or added by a top-up)."""
    await conn.executemany(
        "INSERT INTO lines (line_id, invoice_id, patient_id, line_number, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, appointment_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (line_id) DO NOTHING",
        [
            (
                line.line_id,
                invoice_id,
                patient_id,
                line.line_number,
                line.fee_id,
                line.practitioners.ids,
                line.locations.ids,
                line.valid_from,
                line.valid_until,
                # The read model's words: a booking requested is "requested"; open, linked,
                # used, forfeited, expired and transferred are the same.
                "requested" if line.status.value == "booking_requested" else line.status.value,
                line.appointment_id,
            )
            for line in lines
        ],
    )


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
        await link_waiting(tx, event.patient_id, envelope.occurred_at, event.invoice_id)


async def invoice_voided(tx: Transaction, envelope: Envelope[PackageInvoiceVoided]) -> None:
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE invoices SET redeemable = false, unpaid = false WHERE invoice_id = $1",
        event.invoice_id,
    )


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
        # Say why it stays unlinked (R7); not yet booked: on booking.
        await reconsider(tx, event.appointment_id)
    # R12 / R13: the line is free again, and a voided invoice's appointments look elsewhere.
    await link_waiting(tx, event.patient_id, envelope.occurred_at, event.invoice_id)


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
        await reconsider(tx, appointment.appointment_id)  # the next line, or why not (I8)


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
    await link_waiting(tx, event.patient_id, envelope.occurred_at, event.invoice_id)


async def invoice_extended(tx: Transaction, envelope: Envelope[PackageInvoiceExtended]) -> None:
    """R18: staff gave the invoice a later last day: its lines take appointments up to it, so the
    patient's waiting appointments that now fit are linked (R12)."""
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE lines SET valid_until = $2 WHERE line_id = ANY($1::uuid[]) AND valid_until < $2",
        event.line_ids,
        event.valid_until,
    )
    await link_waiting(tx, event.patient_id, envelope.occurred_at, event.invoice_id)


async def sessions_expired(tx: Transaction, envelope: Envelope[SessionsExpired]) -> None:
    """R18: written off unbooked: never chosen again. Final, whatever the read model thought (a
    link it asked for meanwhile is refused: invoicing wrote the line off first)."""
    await tx.conn.execute(
        "UPDATE lines SET status = 'expired', appointment_id = NULL"
        " WHERE line_id = ANY($1::uuid[])",
        [line.line_id for line in envelope.payload.lines],
    )


async def invoice_topped_up(tx: Transaction, envelope: Envelope[PackageInvoiceToppedUp]) -> None:
    """R18: staff added sessions to the invoice: its new lines can be chosen, and the patient's
    waiting appointments that now fit are linked (R12). A price the patient has not paid yet
    may make a pay-before-use invoice unredeemable until it is."""
    event = envelope.payload
    await tx.conn.execute(
        "UPDATE invoices SET redeemable = $2, unpaid = $3 WHERE invoice_id = $1",
        event.invoice_id,
        event.redeemable,
        unpaid(event.redeemable, event.status.value),
    )
    await insert_lines(tx.conn, event.invoice_id, event.patient_id, event.lines)
    await link_waiting(tx, event.patient_id, envelope.occurred_at, event.invoice_id)


async def invoice_shared(tx: Transaction, envelope: Envelope[PackageInvoiceShared]) -> None:
    """R18 household: staff changed who may use the invoice's sessions. Those added may have
    appointments waiting that now fit (R12); those removed keep what is linked already (only
    new links end), so nothing is decided again for them."""
    event = envelope.payload
    await readmodel.set_household(tx.conn, event.invoice_id, event.shared_with)
    if event.added:
        await waiting_of(tx, [event.patient_id, *event.added], envelope.occurred_at)


async def sessions_transferred(tx: Transaction, envelope: Envelope[SessionsTransferred]) -> None:
    """R18: these unbooked lines moved to another patient's invoice (announced to that patient
    by its own PackageInvoiceIssued): never chosen here again. Final, whatever the read model
    thought (a link it asked for meanwhile is refused: invoicing moved the line first)."""
    await tx.conn.execute(
        "UPDATE lines SET status = 'transferred', appointment_id = NULL"
        " WHERE line_id = ANY($1::uuid[])",
        [line.line_id for line in envelope.payload.lines],
    )
