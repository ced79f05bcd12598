-- Probes this service read from the probes topic (packline_core.probes).
CREATE TABLE ops_probe_received (
    probe_id     uuid        PRIMARY KEY,
    sent_by      text        NOT NULL,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
