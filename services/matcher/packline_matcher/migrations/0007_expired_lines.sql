-- R18: a line still unbooked when its invoice's validity and grace ended is written off
-- (invoicing's SessionsExpired): expired, for good, never chosen again.
ALTER TABLE lines DROP CONSTRAINT lines_status_check;
ALTER TABLE lines ADD CONSTRAINT lines_status_check
    CHECK (status IN ('open', 'requested', 'linked', 'used', 'forfeited', 'expired'));
