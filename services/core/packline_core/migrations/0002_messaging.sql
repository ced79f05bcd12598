-- The messaging core's tables (packline_core.inbox, packline_core.outbox).

-- Every message a consumer applied, recorded in the same transaction as its effect. A message
-- delivered again finds its row here and is skipped: exactly-once effects on at-least-once delivery.
CREATE TABLE inbox (
    consumer        text        NOT NULL,
    message_id      uuid        NOT NULL,
    message_type    text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    applied_by      text        NOT NULL,  -- the replica (instance id) that applied it
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_applied_at ON inbox (applied_at);

-- Messages to publish, written in the same transaction as the change they announce. The relay
-- publishes unsent rows in id order and marks them sent. Rows of one Kafka key are inserted under
-- a transaction-scoped advisory lock on that key, so their ids follow their commit order.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    message_id  uuid        NOT NULL UNIQUE,
    topic       text        NOT NULL,
    kafka_key   bytea       NOT NULL,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
