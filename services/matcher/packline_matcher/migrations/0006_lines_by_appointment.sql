-- GET /links pages in appointment order, and a purchase's search for appointments no line
-- holds asks by appointment: both read lines by appointment_id.
CREATE INDEX lines_appointment ON lines (appointment_id, line_id) WHERE appointment_id IS NOT NULL;
