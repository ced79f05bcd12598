-- R8 remembered by appointment id, whether or not the appointment is known yet: the staff unlink
-- (invoicing's events) can reach the matcher before the booking itself (the calendar's events,
-- another topic), and the booking must then arrive already marked "never link on our own".
CREATE TABLE hand_unlinks (
    appointment_id uuid PRIMARY KEY,
    unlinked_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO hand_unlinks (appointment_id)
SELECT appointment_id FROM appointments WHERE hand_unlinked;
