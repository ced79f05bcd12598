-- A package's whole life (R18, issue #22 point 5): top-ups add sessions to an invoice at a
-- price; transfers move unbooked sessions to another patient's new invoice (docs/revenue.md).

-- A transferred line moved, unbooked, to a line of another patient's invoice: final, holding no
-- appointment, and it names the line that took its place (and only a transferred line does).
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_status_check;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_status_check
    CHECK (status IN ('open', 'booking_requested', 'linked', 'used', 'forfeited', 'expired',
        'transferred'));
ALTER TABLE invoice_lines DROP CONSTRAINT invoice_lines_holds_appointment;
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_holds_appointment
    CHECK ((status IN ('open', 'expired', 'transferred')) = (appointment_id IS NULL));
ALTER TABLE invoice_lines ADD COLUMN transferred_to uuid REFERENCES invoice_lines (line_id);
ALTER TABLE invoice_lines ADD CONSTRAINT invoice_lines_transferred_to
    CHECK ((status = 'transferred') = (transferred_to IS NOT NULL));
-- A line takes the place of at most one transferred line.
CREATE UNIQUE INDEX invoice_lines_transferred_once ON invoice_lines (transferred_to)
    WHERE transferred_to IS NOT NULL;

-- An invoice made by a transfer names the invoice its sessions came from.
ALTER TABLE package_invoices ADD COLUMN transferred_from uuid REFERENCES package_invoices;

-- The report's new kinds of entry: a top-up's price is sold; a transfer takes the moved
-- sessions' shares off the old invoice (transferred_out) and the new one owes them
-- (transferred_in), the same cents.
ALTER TABLE revenue_entries DROP CONSTRAINT revenue_entries_kind_check;
ALTER TABLE revenue_entries ADD CONSTRAINT revenue_entries_kind_check
    CHECK (kind IN ('sold', 'recognised', 'forfeited', 'expired', 'refunded',
        'refunded_recognised', 'voided', 'transferred_out', 'transferred_in'));

-- Every top-up, who and why (the audit); a retried one is answered again from here.
CREATE TABLE invoice_topups (
    topup_id          uuid PRIMARY KEY,
    invoice_id        uuid NOT NULL REFERENCES package_invoices,
    sessions          integer NOT NULL CHECK (sessions >= 1),
    price_cents       integer NOT NULL CHECK (price_cents >= 0),
    first_line_number integer NOT NULL CHECK (first_line_number >= 1),
    reason            text,
    topped_up_by      text NOT NULL,
    topped_up_at      timestamptz NOT NULL
);
CREATE INDEX invoice_topups_invoice ON invoice_topups (invoice_id);

-- Every transfer, who and why; the new invoice is named by it (one invoice per transfer).
CREATE TABLE session_transfers (
    transfer_id     uuid PRIMARY KEY,
    from_invoice_id uuid NOT NULL REFERENCES package_invoices,
    to_invoice_id   uuid NOT NULL UNIQUE REFERENCES package_invoices,
    to_patient_id   text NOT NULL,
    sessions        integer NOT NULL CHECK (sessions >= 1),
    transferred_cents integer NOT NULL CHECK (transferred_cents >= 0),
    reason          text NOT NULL,
    transferred_by  text NOT NULL,
    transferred_at  timestamptz NOT NULL,
    CHECK (from_invoice_id <> to_invoice_id)
);
CREATE INDEX session_transfers_from ON session_transfers (from_invoice_id);
