-- Clinic scope (issue #19): where a patient is seen is read per request, by patient.
CREATE INDEX known_appointments_patient ON known_appointments (patient_id);
CREATE INDEX invoice_lines_patient ON invoice_lines (patient_id);
