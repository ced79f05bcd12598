"""The documents other languages build against, generated from the models:

- ``contracts/schemas/<MessageType>.v<N>.json``: a JSON Schema (draft 2020-12) of each message's
  whole envelope, one file per schema version (old versions stay, as history);
- ``contracts/asyncapi.json``: an AsyncAPI 3 document of every topic, message and service.

    packline-contracts generate   write them (refuses a breaking change without a version bump)
    packline-contracts check      exit 1 when they differ from the models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from packline_contracts import __version__
from packline_contracts.compat import breaking_changes
from packline_contracts.envelope import CONTENT_TYPE, Message, envelope_model, headers_of
from packline_contracts.examples import EXAMPLES, example_envelope
from packline_contracts.registry import all_messages, messages_on
from packline_contracts.topics import (
    CALENDAR_COMMANDS,
    CONSUMERS,
    INVOICING_COMMANDS,
    INVOICING_LINKS,
    SERVICES,
    TOPICS,
    Topic,
)
from packline_contracts.types import ID_PATTERN

COMMAND_TOPICS = (CALENDAR_COMMANDS, INVOICING_COMMANDS, INVOICING_LINKS)

CONTRACTS_DIR = Path(__file__).resolve().parent.parent
SCHEMA_DIR = CONTRACTS_DIR / "schemas"
ASYNCAPI_FILE = CONTRACTS_DIR / "asyncapi.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(message_class: type[Message]) -> str:
    return f"{message_class.MESSAGE_TYPE}.v{message_class.SCHEMA_VERSION}.json"


def json_schema(message_class: type[Message]) -> dict[str, Any]:
    """The JSON Schema of one message type's whole envelope, as consumers validate it."""
    schema = envelope_model(message_class).model_json_schema(mode="validation")
    return {
        "$schema": DRAFT,
        "$id": f"https://packline.dev/schemas/{schema_file_name(message_class)}",
        "x-packline-topic": message_class.TOPIC.name,
        "x-packline-kind": message_class.KIND,
        "x-packline-schema-version": message_class.SCHEMA_VERSION,
        **schema,
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def schema_documents() -> dict[str, str]:
    return {schema_file_name(cls): _dump(json_schema(cls)) for cls in all_messages()}


# --- AsyncAPI ---------------------------------------------------------------------------------


def _channel_id(topic: Topic) -> str:
    parts = topic.name.removeprefix("packline.").replace("-", ".").split(".")
    return parts[0] + "".join(part.capitalize() for part in parts[1:])


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/")
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Copies of the envelope's metadata; when present they must agree with it.",
    "properties": {
        "message-id": {"type": "string", "format": "uuid"},
        "message-type": {"type": "string"},
        "schema-version": {"type": "string", "pattern": "^[0-9]+$"},
        "correlation-id": {"type": "string", "format": "uuid"},
        "causation-id": {"type": "string", "format": "uuid"},
        "producer": {"type": "string"},
        "content-type": {"const": CONTENT_TYPE},
    },
}

DEAD_LETTER_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "The original record's headers, plus where it came from and why it failed.",
    "properties": {
        "dead-letter-reason": {"type": "string"},
        "dead-letter-error": {"type": "string", "description": "The error's class name."},
        "dead-letter-topic": {"type": "string"},
        "dead-letter-partition": {"type": "string"},
        "dead-letter-offset": {"type": "string"},
        "dead-letter-attempts": {"type": "string"},
        "dead-letter-consumer": {"type": "string"},
    },
}


def key_schema(message_class: type[Message]) -> dict[str, Any]:
    """The Kafka key a record of this type must have, as the consumers check it: mandatory, and
    either a payload field's value (the patient id, or the id of the thing defined) or one fixed
    string (catalogue and directory commands, applied in the order sent). Read from the
    example, which is a real message: its key is ``kafka_key()``."""
    example = EXAMPLES[message_class.MESSAGE_TYPE]
    key = example.kafka_key()
    mandatory = "Mandatory: a record without this key is dead-lettered."
    for field, value in example.model_dump().items():
        if value == key:
            return {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": ID_PATTERN,
                "description": f"The payload's {field}. {mandatory}",
                "x-packline-key-field": field,
            }
    return {"type": "string", "const": key, "description": f"Always {key!r}. {mandatory}"}


def asyncapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for cls in all_messages():
        schema = _rewrite_refs(json_schema(cls))
        for name, definition in schema.pop("$defs", {}).items():
            if schemas.setdefault(name, definition) != definition:
                raise RuntimeError(f"two different schemas are named {name}")
        for key in ("$schema", "$id"):
            schema.pop(key)
        schemas[f"{cls.MESSAGE_TYPE}Message"] = schema
        example = example_envelope(cls.MESSAGE_TYPE)
        messages[cls.MESSAGE_TYPE] = {
            "name": cls.MESSAGE_TYPE,
            "title": cls.MESSAGE_TYPE,
            "summary": (cls.__doc__ or cls.MESSAGE_TYPE).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "tags": [{"name": cls.KIND}],
            "headers": HEADERS_SCHEMA,
            "payload": {"$ref": f"#/components/schemas/{cls.MESSAGE_TYPE}Message"},
            "bindings": {"kafka": {"key": key_schema(cls), "bindingVersion": "0.5.0"}},
            "examples": [
                {
                    "name": f"{cls.MESSAGE_TYPE}Example",
                    "headers": {k: v.decode() for k, v in headers_of(example)},
                    "payload": json.loads(example.model_dump_json()),
                }
            ],
        }
    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A record a consumer could never apply: the original bytes, unchanged.",
        "headers": DEAD_LETTER_HEADERS,
        "payload": {"description": "The original record's value, byte for byte."},
    }

    channels: dict[str, Any] = {}
    for topic in TOPICS:
        on_topic = messages_on(topic)
        names = [cls.MESSAGE_TYPE for cls in on_topic] or ["DeadLetter"]
        channels[_channel_id(topic)] = {
            "address": topic.name,
            "title": topic.name,
            "description": f"{topic.purpose} Key: {topic.key}. Owner: {topic.owner}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {
                "kafka": {
                    "topic": topic.name,
                    **({"partitions": topic.partitions} if topic.partitions else {}),
                    "topicConfiguration": {
                        "cleanup.policy": [topic.cleanup.value],
                        "retention.ms": topic.retention_ms,
                    },
                    "bindingVersion": "0.5.0",
                }
            },
        }

    operations: dict[str, Any] = {}

    def operation(op_id: str, action: str, service: str, topic: Topic, summary: str) -> None:
        channel = _channel_id(topic)
        operations[op_id] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "tags": [{"name": service}],
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{name}"}
                for name in channels[channel]["messages"]
            ],
        }

    # Each service publishes its own events and dead letters; others publish to its commands
    # topic (their side is theirs to document), and it receives from the topics it consumes.
    for topic in TOPICS:
        if topic.owner in SERVICES and topic not in COMMAND_TOPICS:
            channel = _channel_id(topic)
            operation(
                f"{topic.owner}Sends{channel[0].upper()}{channel[1:]}",
                "send",
                topic.owner,
                topic,
                f"The {topic.owner} service publishes {topic.name}.",
            )
    # A service writing another's command topic: the matcher's links.
    channel = _channel_id(INVOICING_LINKS)
    operation(
        f"matcherSends{channel[0].upper()}{channel[1:]}",
        "send",
        "matcher",
        INVOICING_LINKS,
        f"The matcher service publishes {INVOICING_LINKS.name} (it alone may write it).",
    )
    for consumer in CONSUMERS:
        for topic in consumer.topics:
            channel = _channel_id(topic)
            operation(
                f"{consumer.service}Receives{channel[0].upper()}{channel[1:]}",
                "receive",
                consumer.service,
                topic,
                f"The {consumer.service} service reads {topic.name} "
                f"(consumer group packline.{consumer.service}.{consumer.name}).",
            )

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Packline",
            "version": __version__,
            "description": "Package invoices linked to the appointments that redeem them. "
            "Commands go to a service's commands topic; events come from its events topics. "
            "Every value is the JSON envelope described in each message's payload schema; each "
            "message's Kafka binding says its key (mandatory): the patient id, the id of the "
            "thing a catalogue or directory event defines, or the fixed key of catalogue and "
            "directory commands.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The broker started by deploy/packline run.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


# --- command line -----------------------------------------------------------------------------


def expected_files() -> dict[Path, str]:
    files = {SCHEMA_DIR / name: text for name, text in schema_documents().items()}
    files[ASYNCAPI_FILE] = _dump(asyncapi_document())
    return files


def stale_files() -> list[Path]:
    return [
        path
        for path, text in expected_files().items()
        if not path.exists() or path.read_text() != text
    ]


def unbumped_breaking_changes() -> dict[str, list[str]]:
    """Breaking differences between the models and the committed schema of the same version."""
    found: dict[str, list[str]] = {}
    for cls in all_messages():
        committed = SCHEMA_DIR / schema_file_name(cls)
        if committed.exists():
            problems = breaking_changes(json.loads(committed.read_text()), json_schema(cls))
            if problems:
                found[cls.MESSAGE_TYPE] = problems
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="packline-contracts")
    parser.add_argument("command", choices=["generate", "check"])
    args = parser.parse_args(argv)
    breaking = unbumped_breaking_changes()
    if breaking:
        for message_type, problems in breaking.items():
            for problem in problems:
                print(f"{message_type}: breaking change: {problem}", file=sys.stderr)
        print(
            "Bump SCHEMA_VERSION of these message types (or make the change compatible).",
            file=sys.stderr,
        )
        sys.exit(1)
    if args.command == "check":
        stale = stale_files()
        for path in stale:
            print(f"out of date: {path.relative_to(CONTRACTS_DIR)}", file=sys.stderr)
        if stale:
            print("Run: packline-contracts generate", file=sys.stderr)
            sys.exit(1)
        return
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path in stale_files():
        path.write_text(expected_files()[path])
        print(f"wrote {path.relative_to(CONTRACTS_DIR)}")


if __name__ == "__main__":
    main()
