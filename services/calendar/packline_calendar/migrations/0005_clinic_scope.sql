-- Clinic scope (issue #19): the locations whose staff see a patient, as the directory names
-- them; with the locations of the patient's appointments, where the calendar has seen them.
ALTER TABLE patients ADD COLUMN clinics text[] NOT NULL DEFAULT '{}';
