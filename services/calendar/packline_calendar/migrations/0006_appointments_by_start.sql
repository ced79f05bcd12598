-- The calendar's day and week views (GET /appointments) ask for the appointments starting in a
-- span, in (starts_at, appointment_id) order a page at a time. No index led with starts_at: the
-- planner read the whole appointments_patient index (patient_id first) and sorted what it found
-- (issue #20, the query-plan test). This one serves the span, the order and the page cursor.
CREATE INDEX appointments_by_start ON appointments (starts_at, appointment_id);
