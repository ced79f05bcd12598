-- Appointments booked from an invoice line are invoicing's to link. The matcher may read the
-- calendar's AppointmentBooked before invoicing's LineBookingRequested (two topics, no order
-- between them); until it has seen that request it must not link the appointment elsewhere
-- (found by the fault suite: the appointment took the patient's other line). Once the request is
-- seen, a line that lets the appointment go leaves it to the matcher like any other.
CREATE TABLE invoice_booking_requests (
    appointment_id uuid PRIMARY KEY
);

INSERT INTO invoice_booking_requests (appointment_id)
SELECT appointment_id FROM appointments WHERE source = 'invoice'
ON CONFLICT DO NOTHING;
