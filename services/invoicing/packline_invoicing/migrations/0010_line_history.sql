-- The whole story of a package line (issue #21 point 2) and the invoice's number (point 3).

-- One row per change of a line, written in the transaction that changes it
-- (packline_invoicing.history). ``at`` is the applied message's time (a request's or a sweep's
-- own time when no message caused it); ``message_id`` the applied message (for a change no
-- message caused, an id derived from the line and its version), so a replayed message writes
-- nothing twice. One message may change a line twice (a link, then the session used at once
-- by a walk-in's attendance), so it is unique with the line and what happened.
CREATE TABLE line_history (
    line_id               uuid NOT NULL REFERENCES invoice_lines,
    version               integer NOT NULL CHECK (version >= 1),  -- the line's, after the change
    -- The line's invoice, as it is (no reference: checking one would lock the invoice's row,
    -- which a void or refund locks before the lines, in the other order).
    invoice_id            uuid NOT NULL,
    line_number           integer NOT NULL CHECK (line_number >= 1),
    at                    timestamptz NOT NULL,
    -- booking_requested, booked (the calendar booked the request), linked, moved (the held
    -- appointment at a new time), relinked (the same appointment changed otherwise),
    -- booking_released, unlinked, used, forfeited, expired, extended
    happened              text NOT NULL CHECK (happened <> ''),
    status                text NOT NULL,  -- the line's status afterwards
    appointment_id        uuid,
    appointment_starts_at timestamptz,
    appointment_time_zone text,
    practitioner_id       text,  -- the appointment's, as invoicing knows it
    previous_starts_at    timestamptz,  -- a move: where the appointment was before
    valid_until           date,  -- an extension: the new last day
    reason                text,  -- why: the unlink reason's code, the forfeit's, a refusal's
    note                  text,  -- the note the change left on the line (who released it, say)
    by_staff              text,  -- who, when the change says (a staff id)
    message_id            uuid NOT NULL,
    PRIMARY KEY (line_id, version),
    UNIQUE (line_id, message_id, happened)
);
CREATE INDEX line_history_invoice ON line_history (invoice_id, line_number, version);

-- A number people can say: given by invoicing when the invoice is issued, once, and stored in
-- its row (shown as INV-000123). Numbers may skip one where an issue was rolled back.
CREATE SEQUENCE package_invoice_numbers AS bigint;
ALTER TABLE package_invoices ADD COLUMN invoice_number bigint;
UPDATE package_invoices p SET invoice_number = n.number
FROM (
    SELECT invoice_id, row_number() OVER (ORDER BY issued_at, invoice_id) AS number
    FROM package_invoices
) AS n
WHERE p.invoice_id = n.invoice_id;
SELECT setval('package_invoice_numbers', coalesce(max(invoice_number), 0) + 1, false)
FROM package_invoices;
ALTER TABLE package_invoices
    ALTER COLUMN invoice_number SET DEFAULT nextval('package_invoice_numbers'),
    ALTER COLUMN invoice_number SET NOT NULL,
    ADD CONSTRAINT package_invoices_number UNIQUE (invoice_number);
ALTER SEQUENCE package_invoice_numbers OWNED BY package_invoices.invoice_number;
