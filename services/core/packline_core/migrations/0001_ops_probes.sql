-- Probes this service read from the probes topic (packline_core.probes). The primary key makes
-- recording a probe idempotent: a redelivered probe changes nothing.
CREATE TABLE ops_probe_received (
    probe_id     uuid        PRIMARY KEY,
    sent_by      text        NOT NULL,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text        NOT NULL,
    kafka_partition integer  NOT NULL,
    kafka_offset bigint      NOT NULL
);
