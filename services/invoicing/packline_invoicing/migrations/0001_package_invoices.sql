-- Invoicing's own data: the catalogue, package invoices, their lines, payments and refunds.

CREATE TABLE fees (
    fee_id           text PRIMARY KEY,
    name             text NOT NULL,
    duration_minutes integer NOT NULL CHECK (duration_minutes > 0),
    price_cents      integer NOT NULL CHECK (price_cents >= 0),
    currency         char(3) NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE packages (
    package_id text PRIMARY KEY,
    terms      jsonb NOT NULL,  -- the package as defined (packline_contracts.catalogue.Package)
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE package_invoices (
    invoice_id         uuid PRIMARY KEY,
    patient_id         text NOT NULL CHECK (patient_id <> ''),
    package_id         text NOT NULL REFERENCES packages,
    package_name       text NOT NULL,
    channel            text NOT NULL CHECK (channel IN ('staff', 'online')),
    issued_at          timestamptz NOT NULL,
    issued_by          text NOT NULL,
    status             text NOT NULL CHECK (status IN ('issued', 'paid', 'void', 'refunded')),
    price_cents        integer NOT NULL CHECK (price_cents >= 0),
    paid_cents         integer NOT NULL DEFAULT 0 CHECK (paid_cents >= 0),
    refunded_cents     integer NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0),
    currency           char(3) NOT NULL,
    pay_before_use     boolean NOT NULL,
    late_cancel_policy jsonb
);
CREATE INDEX package_invoices_patient ON package_invoices (patient_id, issued_at);

-- One line per session. A line holds at most one appointment (one column) and an appointment
-- at most one line (the unique index): I1, by construction.
CREATE TABLE invoice_lines (
    line_id               uuid PRIMARY KEY,
    invoice_id            uuid NOT NULL REFERENCES package_invoices,
    line_number           integer NOT NULL CHECK (line_number >= 1),
    patient_id            text NOT NULL,
    fee_id                text NOT NULL,
    practitioner_ids      text[],  -- null: any practitioner
    location_ids          text[],  -- null: any location
    valid_from            date NOT NULL,
    valid_until           date NOT NULL CHECK (valid_until >= valid_from),
    status                text NOT NULL
                          CHECK (status IN ('open', 'booking_requested', 'linked', 'forfeited')),
    appointment_id        uuid,
    appointment_starts_at timestamptz,
    appointment_version   integer,
    note                  text,  -- why the last booking from this line was refused (R3)
    version               integer NOT NULL CHECK (version >= 1),
    UNIQUE (invoice_id, line_number),
    CHECK ((status = 'open') = (appointment_id IS NULL))
);
CREATE UNIQUE INDEX invoice_lines_one_per_appointment ON invoice_lines (appointment_id)
    WHERE appointment_id IS NOT NULL;
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, line_number);

-- Every link change of an appointment gets the next number, so readers apply them in order.
CREATE TABLE link_versions (
    appointment_id uuid PRIMARY KEY,
    link_version   integer NOT NULL
);

CREATE TABLE payments (
    payment_id   uuid PRIMARY KEY,
    invoice_id   uuid NOT NULL REFERENCES package_invoices,
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    paid_at      timestamptz NOT NULL,
    recorded_by  text NOT NULL
);

CREATE TABLE refunds (
    refund_id    uuid PRIMARY KEY,
    invoice_id   uuid NOT NULL REFERENCES package_invoices,
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    reason       text NOT NULL,
    refunded_by  text NOT NULL
);
