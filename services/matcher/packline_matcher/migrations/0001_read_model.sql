-- The matcher's read model, built only from events (no other service's database is read).

CREATE TABLE invoices (
    invoice_id         uuid PRIMARY KEY,
    patient_id         text NOT NULL,
    package_id         text NOT NULL,
    package_name       text NOT NULL,
    issued_at          timestamptz NOT NULL,
    redeemable         boolean NOT NULL,
    unpaid             boolean NOT NULL,  -- not redeemable only until paid
    late_cancel_policy jsonb
);

CREATE TABLE lines (
    line_id        uuid PRIMARY KEY,
    invoice_id     uuid NOT NULL REFERENCES invoices,
    patient_id     text NOT NULL,
    line_number    integer NOT NULL,
    fee_id         text NOT NULL,
    practitioner_ids text[],
    location_ids   text[],
    valid_from     date NOT NULL,
    valid_until    date NOT NULL,
    -- open; requested (our link command or a booking from the line awaits its answer);
    -- linked; forfeited
    status         text NOT NULL CHECK (status IN ('open', 'requested', 'linked', 'forfeited')),
    appointment_id uuid
);
-- Every decision loads one patient's lines: the cost stays flat however many patients there are.
CREATE INDEX lines_patient ON lines (patient_id, fee_id);

CREATE TABLE appointments (
    appointment_id  uuid PRIMARY KEY,
    patient_id      text NOT NULL,
    version         integer NOT NULL,
    practitioner_id text NOT NULL,
    location_id     text NOT NULL,
    starts_at       timestamptz NOT NULL,
    duration_minutes integer NOT NULL,
    fee_ids         text[] NOT NULL,
    status          text NOT NULL,
    source          text NOT NULL,
    cancelled_at    timestamptz,
    hand_unlinked   boolean NOT NULL DEFAULT false,  -- R8: never linked again on our own
    refused_line_ids uuid[] NOT NULL DEFAULT '{}',    -- lines invoicing refused for this version
    snapshot        jsonb NOT NULL                   -- the event's appointment, sent in link commands
);
CREATE INDEX appointments_waiting ON appointments (patient_id, starts_at);

CREATE TABLE explanations (
    appointment_id      uuid PRIMARY KEY,
    appointment_version integer NOT NULL,
    summary             text NOT NULL,
    candidates          jsonb NOT NULL,
    explained_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE names (
    id   text PRIMARY KEY,  -- a practitioner or location id
    name text NOT NULL
);
