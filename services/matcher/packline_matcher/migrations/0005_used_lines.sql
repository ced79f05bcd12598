-- R14: a line whose appointment was attended is used for good (invoicing's LineUsed).
ALTER TABLE lines DROP CONSTRAINT lines_status_check;
ALTER TABLE lines ADD CONSTRAINT lines_status_check
    CHECK (status IN ('open', 'requested', 'linked', 'used', 'forfeited'));
