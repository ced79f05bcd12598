-- When the calendar was asked to book from a line (R3), so a request it never answers can be
-- released after PACKLINE_BOOKING_REQUEST_TIMEOUT_SECONDS (by the sweep, or by staff sooner).
-- Set exactly while the line is booking_requested.
ALTER TABLE invoice_lines ADD COLUMN booking_requested_at timestamptz;

-- Requests already waiting when this runs start their wait now: none is released at once.
UPDATE invoice_lines SET booking_requested_at = now() WHERE status = 'booking_requested';

ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_booking_requested_at
    CHECK ((status = 'booking_requested') = (booking_requested_at IS NOT NULL));

-- The sweep looks for the oldest waiting requests only.
CREATE INDEX invoice_lines_waiting_requests ON invoice_lines (booking_requested_at)
    WHERE status = 'booking_requested';
