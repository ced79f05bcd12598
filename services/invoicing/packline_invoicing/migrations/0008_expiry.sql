-- A package's whole life (R18, issue #22 point 1): reminders before expiry, extension, and the
-- write-off of sessions still unbooked when validity and grace have ended (docs/revenue.md).

-- A written-off line is expired, for good; like an open line it holds no appointment.
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_status_check;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_status_check
    CHECK (status IN ('open', 'booking_requested', 'linked', 'used', 'forfeited', 'expired'));
-- The unnamed check of 0001 that ties an open line to holding no appointment, found by what it
-- says (its generated name depends on the checks declared before it).
DO $$
DECLARE
    found text;
BEGIN
    SELECT conname INTO STRICT found FROM pg_constraint
    WHERE conrelid = 'invoice_lines'::regclass AND contype = 'c'
        AND pg_get_constraintdef(oid) LIKE '%appointment_id IS NULL%';
    EXECUTE format('ALTER TABLE invoice_lines DROP CONSTRAINT %I', found);
END $$;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_holds_appointment
    CHECK ((status IN ('open', 'expired')) = (appointment_id IS NULL));

-- The package's reminder thresholds and grace, fixed at sale like its other terms (a package
-- defined again later does not change invoices already sold).
ALTER TABLE package_invoices ADD COLUMN grace_days integer NOT NULL DEFAULT 0
    CHECK (grace_days >= 0);
ALTER TABLE package_invoices ADD COLUMN expiry_warning_days integer[] NOT NULL DEFAULT '{}';

-- Each reminder once per invoice, expiry date and threshold: an extension brings new ones.
CREATE TABLE expiry_warnings (
    invoice_id     uuid NOT NULL REFERENCES package_invoices,
    expires_on     date NOT NULL,
    threshold_days integer NOT NULL CHECK (threshold_days > 0),
    warned_at      timestamptz NOT NULL,
    PRIMARY KEY (invoice_id, expires_on, threshold_days)
);

-- Every extension, who and why (the audit); a retried one is answered again from here.
CREATE TABLE invoice_extensions (
    extension_id         uuid PRIMARY KEY,
    invoice_id           uuid NOT NULL REFERENCES package_invoices,
    previous_valid_until date NOT NULL,
    valid_until          date NOT NULL CHECK (valid_until > previous_valid_until),
    reason               text NOT NULL,
    extended_by          text NOT NULL,
    extended_at          timestamptz NOT NULL
);
CREATE INDEX invoice_extensions_invoice ON invoice_extensions (invoice_id);

-- On each line, from its invoice's terms, the grace. Lines sold before this migration have none
-- here: their invoices were sold without a write-off in their terms, so they are not written off
-- automatically.
ALTER TABLE invoice_lines ADD COLUMN grace_days integer CHECK (grace_days >= 0);
-- The last local day before an unbooked line is written off; kept right by the database
-- whenever an extension moves valid_until.
ALTER TABLE invoice_lines ADD COLUMN writes_off_after date
    GENERATED ALWAYS AS (valid_until + grace_days) STORED;
-- The sweep reads only unbooked lines that are due, by that day.
CREATE INDEX invoice_lines_write_off ON invoice_lines (writes_off_after) WHERE status = 'open';

-- The local day of the invoice's next reminder (null: none left), moved on by each reminder and
-- set again by an extension: the sweep reads only the invoices whose day has come.
ALTER TABLE package_invoices ADD COLUMN next_reminder_on date;
CREATE INDEX package_invoices_next_reminder ON package_invoices (next_reminder_on);
