-- Revenue per session and the deferred-revenue report (issue #22, docs/revenue.md).

-- Each line's share of its invoice's price, fixed at sale (rules.session_shares): the price
-- divided by the number of lines, the cents left over one each to the lowest line numbers.
ALTER TABLE invoice_lines ADD COLUMN share_cents integer CHECK (share_cents >= 0);
UPDATE invoice_lines l SET share_cents = s.price_cents / s.lines
    + CASE WHEN s.rank <= s.price_cents % s.lines THEN 1 ELSE 0 END
FROM (
    SELECT l.line_id, i.price_cents,
        count(*) OVER (PARTITION BY l.invoice_id) AS lines,
        row_number() OVER (PARTITION BY l.invoice_id ORDER BY l.line_number) AS rank
    FROM invoice_lines l JOIN package_invoices i USING (invoice_id)
) AS s
WHERE l.line_id = s.line_id;
ALTER TABLE invoice_lines ALTER COLUMN share_cents SET NOT NULL;

-- What the invoice still owes the patient in sessions (deferred revenue), never below zero.
ALTER TABLE package_invoices ADD COLUMN owed_cents integer CHECK (owed_cents >= 0);

-- Every amount that changes what is owed, as its event carries it: the report adds these up.
CREATE TABLE revenue_entries (
    entry_id     uuid PRIMARY KEY,  -- derived from what caused it: a change counts once
    invoice_id   uuid NOT NULL REFERENCES package_invoices,
    kind         text NOT NULL CHECK (kind IN ('sold', 'recognised', 'forfeited', 'expired',
                     'refunded', 'refunded_recognised', 'voided')),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    accounted_at timestamptz NOT NULL,
    line_id      uuid
);
CREATE INDEX revenue_entries_invoice ON revenue_entries (invoice_id);
CREATE INDEX revenue_entries_accounted_at ON revenue_entries (accounted_at);

-- Invoices sold before this migration: their sale counts when it happened, and what they had
-- already used, forfeited, refunded or voided counts at the moment this migration runs (the
-- events of those changes carried no amounts). Afterwards every change writes its own entry.
INSERT INTO revenue_entries (entry_id, invoice_id, kind, amount_cents, accounted_at)
SELECT md5('sold' || invoice_id::text)::uuid, invoice_id, 'sold', price_cents, issued_at
FROM package_invoices;

WITH spent AS (
    SELECT i.invoice_id, i.price_cents, i.refunded_cents, i.status,
        coalesce(sum(l.share_cents) FILTER (WHERE l.status = 'used'), 0) AS used,
        coalesce(sum(l.share_cents) FILTER (WHERE l.status = 'forfeited'), 0) AS forfeited
    FROM package_invoices i LEFT JOIN invoice_lines l USING (invoice_id)
    GROUP BY i.invoice_id
), steps AS (
    SELECT invoice_id, status, used, forfeited,
        least(refunded_cents, price_cents - used - forfeited) AS refunded,
        refunded_cents - least(refunded_cents, price_cents - used - forfeited)
            AS refunded_recognised,
        price_cents - used - forfeited - least(refunded_cents, price_cents - used - forfeited)
            AS left_owed
    FROM spent
), entries AS (
    SELECT invoice_id, 'recognised' AS kind, used AS amount FROM steps
    UNION ALL SELECT invoice_id, 'forfeited', forfeited FROM steps
    UNION ALL SELECT invoice_id, 'refunded', refunded FROM steps
    UNION ALL SELECT invoice_id, 'refunded_recognised', refunded_recognised FROM steps
    UNION ALL SELECT invoice_id, 'voided', left_owed FROM steps WHERE status = 'void'
)
INSERT INTO revenue_entries (entry_id, invoice_id, kind, amount_cents, accounted_at)
SELECT md5(kind || invoice_id::text)::uuid, invoice_id, kind, amount, now()
FROM entries WHERE amount > 0;

UPDATE package_invoices i SET owed_cents = i.price_cents - coalesce((
    SELECT sum(e.amount_cents) FROM revenue_entries e
    WHERE e.invoice_id = i.invoice_id AND e.kind NOT IN ('sold', 'refunded_recognised')
), 0);
ALTER TABLE package_invoices ALTER COLUMN owed_cents SET NOT NULL;
