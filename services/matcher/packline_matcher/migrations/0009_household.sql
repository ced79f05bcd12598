-- R18 household: the family members who may use an invoice's sessions besides its patient
-- (from PackageInvoiceIssued and PackageInvoiceShared), and the lines of an invoice by fee, to
-- read a shared package's lines for a member's appointment.
CREATE TABLE household_members (
    patient_id text NOT NULL,
    invoice_id uuid NOT NULL REFERENCES invoices,
    PRIMARY KEY (patient_id, invoice_id)
);
CREATE INDEX household_members_invoice ON household_members (invoice_id);
CREATE INDEX lines_invoice ON lines (invoice_id, fee_id);

-- Patients' names from the patient directory (R16): an explanation or a rule names whose
-- package a shared session is.
CREATE TABLE patient_names (
    patient_id text PRIMARY KEY,
    name       text NOT NULL
);
