-- R15: each location has an IANA time zone; a location defined before zones existed is in UTC
-- (documented) until it is defined again with its zone. An appointment keeps the zone of its
-- location as of its version, which its events carry for every date rule downstream.
ALTER TABLE locations ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
ALTER TABLE appointments ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';
