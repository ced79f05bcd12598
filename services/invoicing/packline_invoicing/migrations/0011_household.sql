-- A package's household (R18, issue #22 point 4; docs/household.md): the family members whose
-- appointments may redeem an invoice's sessions besides its patient.

-- Whether ``members`` is a household of ``owner``'s invoice: at most 10 patients, each once,
-- none empty or null, never the invoice's own patient (the contracts' rule, held here too).
CREATE FUNCTION household_is_valid(owner text, members text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS $$
        SELECT coalesce(cardinality(members), 0) <= 10
            AND array_position(members, NULL) IS NULL
            AND NOT (owner = ANY (members))
            AND NOT ('' = ANY (members))
            AND (SELECT count(DISTINCT member) FROM unnest(members) AS member)
                = coalesce(cardinality(members), 0)
    $$;

-- The members now, in the order staff named them; empty: shared with nobody.
ALTER TABLE package_invoices ADD COLUMN shared_with text[] NOT NULL DEFAULT '{}';
ALTER TABLE package_invoices ADD CONSTRAINT package_invoices_household
    CHECK (household_is_valid(patient_id, shared_with));

-- Every change of a household, who and why (the audit); a retried one is answered again from
-- here (its sharing_id), never applied twice.
CREATE TABLE invoice_sharings (
    sharing_id  uuid PRIMARY KEY,
    invoice_id  uuid NOT NULL REFERENCES package_invoices,
    previous    text[] NOT NULL,
    shared_with text[] NOT NULL,
    added       text[] NOT NULL,
    removed     text[] NOT NULL,
    reason      text,
    shared_by   text NOT NULL,
    shared_at   timestamptz NOT NULL
);
CREATE INDEX invoice_sharings_invoice ON invoice_sharings (invoice_id, shared_at);
