-- R15: the calendar's locations and their time zones (from its directory topic): the day a
-- package is bought, and "N days from purchase", are the selling location's local days.
CREATE TABLE locations (
    location_id text PRIMARY KEY,
    time_zone   text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Where an invoice was sold and the zone its validity was counted in (UTC before zones existed).
ALTER TABLE package_invoices ADD COLUMN location_id text;
ALTER TABLE package_invoices ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

-- The zone of the appointment a line holds, to show its date and time as the location does.
ALTER TABLE invoice_lines ADD COLUMN appointment_time_zone text;
