-- The calendar's own data: its directory, the fees it books, appointments and package notes.

-- Exclusion constraints on (practitioner, time range) need equality on text in a GiST index.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE practitioners (
    practitioner_id text PRIMARY KEY,
    name            text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE locations (
    location_id text PRIMARY KEY,
    name        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Read model of invoicing's fee catalogue (packline.invoicing.catalogue).
CREATE TABLE fees (
    fee_id           text PRIMARY KEY,
    name             text NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes > 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE appointments (
    appointment_id   uuid PRIMARY KEY,
    patient_id       text NOT NULL CHECK (patient_id <> ''),
    practitioner_id  text NOT NULL REFERENCES practitioners,
    location_id      text NOT NULL REFERENCES locations,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 1 AND 1440),
    fee_ids          text[] NOT NULL CHECK (cardinality(fee_ids) BETWEEN 1 AND 20),
    status           text NOT NULL CHECK (status IN
                         ('booked', 'arrived', 'completed', 'no_show', 'cancelled', 'deleted')),
    source           text NOT NULL CHECK (source IN ('staff', 'online', 'invoice')),
    invoice_id       uuid,
    line_id          uuid,
    version          integer NOT NULL CHECK (version >= 1),
    booked_by        text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at = starts_at + make_interval(mins => duration_minutes)),
    CHECK ((source = 'invoice') = (invoice_id IS NOT NULL AND line_id IS NOT NULL)),
    -- Availability: a practitioner is never in two places at once. Enforced here, not by a
    -- read-then-write check, so two racing bookings cannot both win.
    CONSTRAINT practitioner_not_double_booked EXCLUDE USING gist (
        practitioner_id WITH =, tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (status IN ('booked', 'arrived', 'completed', 'no_show'))
);
CREATE INDEX appointments_patient ON appointments (patient_id, starts_at);

-- The package note shown in the appointment panel (R4), from invoicing's line events. Kept even
-- before the appointment is known here: events of two topics may arrive in either order.
CREATE TABLE package_notes (
    appointment_id uuid PRIMARY KEY,
    link_version   integer NOT NULL CHECK (link_version >= 1),
    state          text NOT NULL CHECK (state IN ('linked', 'unlinked', 'forfeited')),
    invoice_id     uuid NOT NULL,
    line_id        uuid NOT NULL,
    package_id     text NOT NULL,
    package_name   text NOT NULL,
    session_number integer,
    balance        jsonb NOT NULL,
    detail         text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
