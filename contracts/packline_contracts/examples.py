"""One realistic example of every message type: used in the AsyncAPI document, the docs and the
round-trip tests. Ids and times are fixed so the generated documents are stable.

Each works when sent as it is, with its binding's key (tests/integration/test_contract_examples.py
sends them all through the broker): times lie in 2099, so a booking is in the future. The ids
are fixed, so an example sent twice is applied once; a new message needs a new ``message_id``
(and a new appointment or invoice a new id of its own)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from packline_contracts import appointments as a
from packline_contracts import catalogue as c
from packline_contracts import invoices as i
from packline_contracts import matching as m
from packline_contracts import patients as pt
from packline_contracts import probes as p
from packline_contracts.envelope import Envelope, Message
from packline_contracts.ids import derived_id
from packline_contracts.registry import MESSAGE_TYPES
from packline_contracts.types import (
    Appointment,
    AppointmentStatus,
    Balance,
    BookingSource,
    InvoiceLineRef,
    LateCancelPolicy,
    PackageItem,
    Restriction,
    Validity,
)

PATIENT = "patient-1042"
DR_A = "dr-adams"
NORTHSIDE = "northside"
MASSAGE = "massage-60"
PACKAGE = "massage-5x60"
INVOICE = derived_id("example", "invoice")
LINE_1 = derived_id("example", "invoice", "line", 1)
LINE_2 = derived_id("example", "invoice", "line", 2)
APPOINTMENT = derived_id("example", "appointment")
BOOKED_AT = datetime(2099, 3, 2, 9, 30, tzinfo=UTC)
STARTS_AT = datetime(2099, 3, 10, 10, 0, tzinfo=UTC)
ISSUED_AT = datetime(2099, 3, 1, 14, 0, tzinfo=UTC)

RESTRICT_DR_A = Restriction(ids=[DR_A])
RESTRICT_NORTHSIDE = Restriction(ids=[NORTHSIDE])
BALANCE = Balance(total=5, booked=2, used=0, remaining=3, expires_on=date(2099, 5, 30))

APPOINTMENT_NOW = Appointment(
    appointment_id=APPOINTMENT,
    version=1,
    patient_id=PATIENT,
    practitioner_id=DR_A,
    location_id=NORTHSIDE,
    starts_at=STARTS_AT,
    duration_minutes=60,
    fee_ids=[MASSAGE],
    status=AppointmentStatus.BOOKED,
    source=BookingSource.STAFF,
)


def _line(number: int, status: i.LineStatus, linked: bool) -> i.InvoiceLine:
    return i.InvoiceLine(
        line_id=derived_id("example", "invoice", "line", number),
        line_number=number,
        fee_id=MASSAGE,
        practitioners=RESTRICT_DR_A,
        locations=RESTRICT_NORTHSIDE,
        valid_from=date(2099, 3, 1),
        valid_until=date(2099, 5, 30),
        status=status,
        appointment_id=APPOINTMENT if linked else None,
        appointment_starts_at=STARTS_AT if linked else None,
        version=2 if linked else 1,
    )


OPEN_LINE = _line(2, i.LineStatus.OPEN, linked=False)
LINKED_LINE = _line(2, i.LineStatus.LINKED, linked=True)
PACKAGE_TERMS = {
    "package_id": PACKAGE,
    "name": "5 x 60-min massage with Dr Adams at Northside",
    "items": [PackageItem(fee_id=MASSAGE, count=5)],
    "practitioners": RESTRICT_DR_A,
    "locations": RESTRICT_NORTHSIDE,
    "validity": Validity(days=90),
    "price_cents": 40000,
    "currency": "EUR",
    "online_purchase": True,
    "pay_before_use": True,
    "late_cancel_policy": LateCancelPolicy(forfeit_within_hours=24, no_show_forfeits=True),
    "expiry_warning_days": [30, 7],
    "grace_days": 7,
}
FEE_TERMS = {
    "fee_id": MASSAGE,
    "name": "60-min massage",
    "duration_minutes": 60,
    "price_cents": 9000,
    "currency": "EUR",
}
PATIENT_ENTRY = {
    "patient_id": PATIENT,
    "name": "Jane Zoë Smith",
    "preferred_name": "Zoë",
    "date_of_birth": date(1985, 7, 14),
    "contact": pt.PatientContact(email="zoe.smith@example.org", phone="+61 2 9876 5432"),
}
LINE_EVENT = {
    "patient_id": PATIENT,
    "invoice_id": INVOICE,
    "package_id": PACKAGE,
    "package_name": PACKAGE_TERMS["name"],
    "balance": BALANCE,
}

EXAMPLES: dict[str, Message] = {
    example.MESSAGE_TYPE: example
    for example in (
        c.DefineFee(**FEE_TERMS),
        c.FeeDefined(**FEE_TERMS),
        c.DefinePackage(**PACKAGE_TERMS),
        c.PackageDefined(**PACKAGE_TERMS),
        c.DefinePractitioner(practitioner_id=DR_A, name="Dr Adams"),
        c.PractitionerDefined(practitioner_id=DR_A, name="Dr Adams"),
        c.DefineLocation(location_id=NORTHSIDE, name="Northside clinic"),
        c.LocationDefined(location_id=NORTHSIDE, name="Northside clinic"),
        a.BookAppointment(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            practitioner_id=DR_A,
            location_id=NORTHSIDE,
            starts_at=STARTS_AT,
            fee_ids=[MASSAGE],
            source=BookingSource.ONLINE,
            booked_by="online-bookings",
        ),
        a.RescheduleAppointment(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            starts_at=datetime(2099, 3, 11, 15, 0, tzinfo=UTC),
            requested_by="reception:maria",
        ),
        a.ChangeAppointment(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            fee_ids=["massage-30"],
            requested_by="reception:maria",
        ),
        a.CancelAppointment(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            cancelled_by="patient",
            cancelled_at=datetime(2099, 3, 9, 18, 0, tzinfo=UTC),
            reason="Unwell",
        ),
        a.DeleteAppointment(
            patient_id=PATIENT, appointment_id=APPOINTMENT, deleted_by="reception:maria"
        ),
        a.RecordAttendance(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            attendance=a.Attendance.NO_SHOW,
            recorded_by="dr-adams",
        ),
        a.AppointmentBooked(patient_id=PATIENT, appointment=APPOINTMENT_NOW),
        a.AppointmentRescheduled(
            patient_id=PATIENT,
            appointment=APPOINTMENT_NOW.model_copy(
                update={"version": 2, "starts_at": datetime(2099, 3, 11, 15, 0, tzinfo=UTC)}
            ),
            previous_starts_at=STARTS_AT,
        ),
        a.AppointmentChanged(
            patient_id=PATIENT,
            appointment=APPOINTMENT_NOW.model_copy(
                update={"version": 3, "fee_ids": ["massage-30"]}
            ),
            changed=["fee_ids"],
        ),
        a.AppointmentCancelled(
            patient_id=PATIENT,
            appointment=APPOINTMENT_NOW.model_copy(
                update={"version": 4, "status": AppointmentStatus.CANCELLED}
            ),
            cancelled_by="patient",
            cancelled_at=datetime(2099, 3, 9, 18, 0, tzinfo=UTC),
            reason="Unwell",
        ),
        a.AppointmentDeleted(
            patient_id=PATIENT,
            appointment=APPOINTMENT_NOW.model_copy(
                update={"version": 4, "status": AppointmentStatus.DELETED}
            ),
            deleted_by="reception:maria",
        ),
        a.AttendanceRecorded(
            patient_id=PATIENT,
            appointment=APPOINTMENT_NOW.model_copy(
                update={"version": 4, "status": AppointmentStatus.NO_SHOW}
            ),
        ),
        a.BookingRefused(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            code=a.RefusalCode.SLOT_TAKEN,
            reason="Dr Adams is already booked from 10:00 to 11:00 on Tue 10 Mar",
            clashing_appointment_id=derived_id("example", "other-appointment"),
            invoice_line=InvoiceLineRef(invoice_id=INVOICE, line_id=LINE_2),
        ),
        a.AppointmentChangeRefused(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            command_type="RescheduleAppointment",
            code=a.RefusalCode.IN_THE_PAST,
            reason="Cannot move an appointment into the past",
        ),
        i.IssuePackageInvoice(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            package_id=PACKAGE,
            channel=i.PurchaseChannel.STAFF,
            issued_by="reception:maria",
            issued_at=ISSUED_AT,
        ),
        i.RecordPayment(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            payment_id=derived_id("example", "payment"),
            amount_cents=40000,
            paid_at=ISSUED_AT,
            recorded_by="payments-service",
        ),
        i.VoidPackageInvoice(
            patient_id=PATIENT, invoice_id=INVOICE, voided_by="manager:li", reason="Sold in error"
        ),
        i.RefundPackageInvoice(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            refund_id=derived_id("example", "refund"),
            amount_cents=40000,
            refunded_by="manager:li",
            reason="Moving abroad",
        ),
        i.LinkAppointment(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            line_id=LINE_2,
            appointment=APPOINTMENT_NOW,
            rule="earliest expiry (30 May), then oldest invoice, then line 2",
        ),
        i.UnlinkAppointment(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            line_id=LINE_2,
            appointment_id=APPOINTMENT,
            appointment_version=4,
            reason=i.UnlinkReason.CANCELLED,
        ),
        i.UnassignInvoiceLine(
            patient_id=PATIENT, invoice_id=INVOICE, line_id=LINE_2, unassigned_by="reception:maria"
        ),
        i.ExtendPackageInvoice(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            extension_id=derived_id("example", "extension"),
            valid_until=date(2099, 6, 30),
            reason="Patient was in hospital for three weeks",
            extended_by="manager:li",
        ),
        i.TopUpPackageInvoice(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            topup_id=derived_id("example", "topup"),
            sessions=2,
            price_cents=15000,
            reason="Two more sessions at the returning-patient price",
            topped_up_by="billing:bo",
        ),
        i.SharePackageInvoice(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            sharing_id=derived_id("example", "sharing"),
            shared_with=["patient-2077"],
            reason="Her daughter's sessions come from the same package",
            shared_by="reception:sam",
        ),
        i.TransferSessions(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            transfer_id=derived_id("example", "transfer"),
            to_patient_id="patient-2077",
            sessions=1,
            reason="Given to her daughter, who continues the treatment",
            transferred_by="manager:li",
        ),
        i.PackageInvoiceIssued(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            invoice=i.PackageInvoice(
                invoice_id=INVOICE,
                patient_id=PATIENT,
                package_id=PACKAGE,
                package_name=PACKAGE_TERMS["name"],
                channel=i.PurchaseChannel.STAFF,
                issued_at=ISSUED_AT,
                status=i.InvoiceStatus.ISSUED,
                price_cents=40000,
                paid_cents=0,
                currency="EUR",
                pay_before_use=True,
                redeemable=False,
                late_cancel_policy=PACKAGE_TERMS["late_cancel_policy"],
                lines=[_line(1, i.LineStatus.OPEN, linked=False), OPEN_LINE],
                balance=Balance(
                    total=2, booked=0, used=0, remaining=2, expires_on=date(2099, 5, 30)
                ),
            ),
        ),
        i.PaymentRecorded(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            payment_id=derived_id("example", "payment"),
            amount_cents=40000,
            paid_cents=40000,
            status=i.InvoiceStatus.PAID,
            redeemable=True,
            balance=BALANCE,
        ),
        i.PackageInvoiceVoided(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            voided_by="manager:li",
            reason="Sold in error",
            balance=Balance(total=5, booked=0, used=0, remaining=5),
        ),
        i.PackageInvoiceRefunded(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            refund_id=derived_id("example", "refund"),
            amount_cents=40000,
            refunded_cents=40000,
            status=i.InvoiceStatus.REFUNDED,
            redeemable=False,
            balance=Balance(total=5, booked=0, used=0, remaining=5),
        ),
        i.LineLinked(
            **LINE_EVENT,
            line=LINKED_LINE,
            appointment_id=APPOINTMENT,
            appointment_version=1,
            link_version=1,
            session_number=2,
            rule="earliest expiry (30 May), then oldest invoice, then line 2",
        ),
        i.LineUnlinked(
            **LINE_EVENT,
            line=OPEN_LINE.model_copy(update={"version": 3}),
            appointment_id=APPOINTMENT,
            link_version=2,
            reason=i.UnlinkReason.CANCELLED,
        ),
        i.LineForfeited(
            **LINE_EVENT,
            line=LINKED_LINE.model_copy(update={"version": 3, "status": i.LineStatus.FORFEITED}),
            appointment_id=APPOINTMENT,
            link_version=2,
            reason="Cancelled 16 hours before; the package forfeits inside 24 hours",
        ),
        i.LineUsed(
            **{
                **LINE_EVENT,
                "balance": Balance(
                    total=5, booked=1, used=1, remaining=3, expires_on=date(2099, 5, 30)
                ),
            },
            line=LINKED_LINE.model_copy(update={"version": 3, "status": i.LineStatus.USED}),
            appointment_id=APPOINTMENT,
            appointment_version=3,
            link_version=2,
            session_number=2,
        ),
        i.LinkRefused(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            line_id=LINE_2,
            appointment_id=APPOINTMENT,
            appointment_version=1,
            code=i.LinkRefusalCode.LINE_TAKEN,
            reason="Line 2 already redeems another appointment",
        ),
        i.InvoiceCommandRefused(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            command_type="RecordPayment",
            reason="no package invoice 7f1c... of this patient",
        ),
        i.LineBookingRequested(
            **LINE_EVENT,
            line=OPEN_LINE.model_copy(update={"status": i.LineStatus.BOOKING_REQUESTED}),
            appointment_id=APPOINTMENT,
            starts_at=STARTS_AT,
        ),
        i.LineBookingRefused(
            **LINE_EVENT,
            line=OPEN_LINE,
            appointment_id=APPOINTMENT,
            reason="Dr Adams is already booked from 10:00 to 11:00 on Tue 10 Mar",
        ),
        i.PackageExpiringSoon(
            **LINE_EVENT,
            expires_on=date(2099, 5, 30),
            days_left=7,
            threshold_days=7,
            written_off_after=date(2099, 6, 6),
            unbooked=3,
        ),
        i.SessionsExpired(
            **{
                **LINE_EVENT,
                "balance": Balance(
                    total=5,
                    booked=0,
                    used=5,
                    remaining=0,
                    expires_on=date(2099, 5, 30),
                    expired=1,
                ),
            },
            expired_on=date(2099, 5, 30),
            grace_days=7,
            lines=[OPEN_LINE.model_copy(update={"version": 2, "status": i.LineStatus.EXPIRED})],
            sessions=1,
            expired_cents=8000,
            owed_cents=0,
            accounted_at=datetime(2099, 6, 7, 0, 0, tzinfo=UTC),
        ),
        i.PackageInvoiceExtended(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            extension_id=derived_id("example", "extension"),
            previous_valid_until=date(2099, 5, 30),
            valid_until=date(2099, 6, 30),
            reason="Patient was in hospital for three weeks",
            extended_by="manager:li",
            line_ids=[LINE_2],
            balance=BALANCE.model_copy(update={"expires_on": date(2099, 6, 30)}),
        ),
        i.PackageInvoiceShared(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            sharing_id=derived_id("example", "sharing"),
            shared_with=["patient-2077"],
            added=["patient-2077"],
            removed=[],
            reason="Her daughter's sessions come from the same package",
            shared_by="reception:sam",
            shared_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
        ),
        i.PackageInvoiceToppedUp(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            topup_id=derived_id("example", "topup"),
            package_id=PACKAGE,
            package_name=PACKAGE_TERMS["name"],
            lines=[
                OPEN_LINE.model_copy(
                    update={
                        "line_id": derived_id("example", "invoice", "line", 6),
                        "line_number": 6,
                        "share_cents": 7500,
                    }
                ),
                OPEN_LINE.model_copy(
                    update={
                        "line_id": derived_id("example", "invoice", "line", 7),
                        "line_number": 7,
                        "share_cents": 7500,
                    }
                ),
            ],
            sessions=2,
            sold_cents=15000,
            price_cents=55000,
            status=i.InvoiceStatus.ISSUED,
            redeemable=True,
            owed_cents=47000,
            accounted_at=datetime(2099, 3, 2, 9, 30, tzinfo=UTC),
            reason="Two more sessions at the returning-patient price",
            topped_up_by="billing:bo",
            balance=Balance(total=7, booked=1, used=1, remaining=5, expires_on=date(2099, 5, 30)),
        ),
        i.SessionsTransferred(
            patient_id=PATIENT,
            invoice_id=INVOICE,
            transfer_id=derived_id("example", "transfer"),
            package_id=PACKAGE,
            package_name=PACKAGE_TERMS["name"],
            to_patient_id="patient-2077",
            to_invoice_id=derived_id("transfer", derived_id("example", "transfer")),
            lines=[
                OPEN_LINE.model_copy(
                    update={"version": 2, "status": i.LineStatus.TRANSFERRED, "share_cents": 8000}
                )
            ],
            sessions=1,
            transferred_cents=8000,
            owed_cents=24000,
            accounted_at=datetime(2099, 3, 2, 9, 30, tzinfo=UTC),
            reason="Given to her daughter, who continues the treatment",
            transferred_by="manager:li",
            balance=Balance(total=4, booked=1, used=1, remaining=2, expires_on=date(2099, 5, 30)),
        ),
        m.AppointmentNotMatched(
            patient_id=PATIENT,
            appointment_id=APPOINTMENT,
            appointment_version=1,
            fee_ids=[MASSAGE],
            candidates=[
                m.CandidatePackage(
                    invoice_id=INVOICE,
                    package_id=PACKAGE,
                    package_name=PACKAGE_TERMS["name"],
                    code=m.NoMatchCode.PRACTITIONER_NOT_ALLOWED,
                    reason="covers this fee only with Dr Adams",
                )
            ],
            summary="Not linked: package 5 x 60-min massage covers this fee only with Dr Adams",
        ),
        pt.RegisterPatient(**PATIENT_ENTRY),
        pt.UpdatePatient(**{**PATIENT_ENTRY, "name": "Jane Zoë Smith-Jones"}),
        pt.PatientRegistered(**PATIENT_ENTRY),
        pt.PatientUpdated(**{**PATIENT_ENTRY, "name": "Jane Zoë Smith-Jones"}),
        p.ProbeSent(
            probe_id=derived_id("example", "probe"),
            sent_by="operator",
            sent_at=BOOKED_AT,
        ),
    )
}


def example_envelope(message_type: str) -> Envelope[Message]:
    """The example of ``message_type`` in an envelope with fixed ids."""
    payload = EXAMPLES[message_type]
    return Envelope.wrap(
        payload,
        producer="example-producer",
        message_id=derived_id("example", "message", message_type),
        correlation_id=derived_id("example", "correlation"),
        occurred_at=BOOKED_AT,
    )


missing = set(MESSAGE_TYPES) - set(EXAMPLES)
if missing:  # every message type must have an example; the schema docs rely on it
    raise RuntimeError(f"message types without an example: {sorted(missing)}")
