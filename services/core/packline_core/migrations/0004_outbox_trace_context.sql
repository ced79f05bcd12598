-- The trace context (W3C traceparent / tracestate, as a JSON object) current when a message was
-- written to the outbox (packline_core.tracing). The relay sends it on as Kafka headers, so a
-- flow's trace survives a restart between the commit and the publish. NULL: no trace (rows
-- written before this column, or outside any span); the relay then starts a new one.
ALTER TABLE outbox ADD COLUMN trace_context jsonb;
