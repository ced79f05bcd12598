-- Invoicing checks a LinkAppointment against the appointment it knows (issue #19 point 4), not
-- only against the snapshot inside the command: what it needs of each appointment, kept from the
-- calendar's events (the booking-results consumer), the latest version only.
CREATE TABLE known_appointments (
    appointment_id uuid PRIMARY KEY,
    patient_id text NOT NULL,
    version integer NOT NULL,
    practitioner_id text NOT NULL,
    location_id text NOT NULL,
    starts_at timestamptz NOT NULL,
    fee_ids text[] NOT NULL,
    status text NOT NULL,
    time_zone text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Topics are read in no set order between them: a link can arrive before invoicing has read the
-- calendar event of the version it names. It waits here (nothing is published, the line stays
-- as it is) and is checked when that version is read; the matcher's unlink withdraws it.
CREATE TABLE waiting_links (
    line_id uuid NOT NULL,
    appointment_id uuid NOT NULL,
    appointment_version integer NOT NULL,
    command jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (line_id, appointment_id, appointment_version)
);
CREATE INDEX waiting_links_appointment ON waiting_links (appointment_id);
