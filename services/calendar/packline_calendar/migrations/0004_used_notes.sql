-- R14: the package note of an attended appointment says its session is used (LineUsed).
ALTER TABLE package_notes DROP CONSTRAINT package_notes_state_check;
ALTER TABLE package_notes ADD CONSTRAINT package_notes_state_check
    CHECK (state IN ('linked', 'used', 'unlinked', 'forfeited'));
