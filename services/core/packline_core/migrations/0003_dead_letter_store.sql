-- Dead letters kept in the service's own database (packline_core.deadletters): the original
-- record, byte for byte, of one that cannot go on the dead-letter topic as it is (too large
-- for the broker beside the dead-letter headers), and of one whose dead-letter publish kept
-- failing. The topic then carries a small reference (header dead-letter-stored = id); a row
-- with published_at NULL is still waiting for its reference to reach the topic.
CREATE TABLE dead_letter_store (
    id              uuid        PRIMARY KEY,  -- uuid5 of consumer/topic/partition/offset
    consumer        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    kafka_key       bytea,
    value           bytea,
    header_names    bytea[]     NOT NULL,     -- bytes: a client may send names that are not UTF-8
    header_values   bytea[]     NOT NULL,
    reason          text        NOT NULL,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX dead_letter_store_unpublished ON dead_letter_store (stored_at)
    WHERE published_at IS NULL;
