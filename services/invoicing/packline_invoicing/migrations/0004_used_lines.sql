-- R14: a line whose appointment the patient arrived for (or completed) is used, for good.
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_status_check;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_status_check
    CHECK (status IN ('open', 'booking_requested', 'linked', 'used', 'forfeited'));

-- Attendance can reach invoicing before the link of its appointment (a walk-in booked and marked
-- arrived at once: the link goes through the matcher, the attendance does not). It is kept on the
-- appointment's link-version row, which the link locks too, so whichever comes second sees it.
ALTER TABLE link_versions ADD COLUMN attended boolean NOT NULL DEFAULT false;
