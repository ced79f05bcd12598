-- R15: an appointment's day is judged in its location's time zone, which its events carry.
-- Appointments read before zones existed were judged in UTC, and stay so until they change.
ALTER TABLE appointments ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
