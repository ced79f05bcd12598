-- The patient directory (R16), read from packline.patients.directory: who a patient id is, so
-- staff find patients by name. Kept for any patient id, with or without appointments here; an
-- appointment never waits for its patient's entry (no foreign key from appointments).
CREATE TABLE patients (
    patient_id     text PRIMARY KEY CHECK (patient_id <> ''),
    name           text NOT NULL,
    preferred_name text,
    date_of_birth  date,
    email          text,
    phone          text,
    -- When the patient's records said this (the record's occurred_at): an older record, read
    -- late or again, never overwrites a newer one.
    recorded_at    timestamptz NOT NULL,
    -- The name's and the preferred name's words, case-folded and without accents (see
    -- packline_calendar.patients.search_words): every word of a search must begin one of them.
    search_words   text[] NOT NULL,
    -- The order of search results: the normalised name, in byte order, then the id.
    sort_name      text COLLATE "C" NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patients_by_sort_name ON patients (sort_name, patient_id);
CREATE INDEX patients_by_date_of_birth ON patients (date_of_birth, sort_name, patient_id);

-- The same words, one row each, in byte order: the patients with a word beginning with a prefix
-- are one range of this index (no extension needed), however many patients there are.
CREATE TABLE patient_search_words (
    word       text COLLATE "C" NOT NULL,
    patient_id text NOT NULL REFERENCES patients ON DELETE CASCADE,
    PRIMARY KEY (word, patient_id)
);
CREATE INDEX patient_search_words_by_patient ON patient_search_words (patient_id);
