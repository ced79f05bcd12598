-- R18: a line moved unbooked to another patient's invoice (invoicing's SessionsTransferred) is
-- transferred, for good, never chosen again; the new invoice's lines come as its own sale.
ALTER TABLE lines DROP CONSTRAINT lines_status_check;
ALTER TABLE lines ADD CONSTRAINT lines_status_check
    CHECK (status IN ('open', 'requested', 'linked', 'used', 'forfeited', 'expired',
        'transferred'));
