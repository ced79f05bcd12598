"""``packline-admin``: operations commands that are not one service's.

    packline-admin create-topics [--partitions N] [--replication-factor N]
    packline-admin dead-letters list --service calendar
    packline-admin dead-letters redrive --service calendar (--all | --at PARTITION:OFFSET ...)
    packline-admin reconcile [--calendar-url U] [--invoicing-url U] [--matcher-url U]
    packline-admin rewind --service matcher   (replicas stopped: replay its topics from the start)
    packline-admin acls [--format lines|kafka-acls]   (each principal's ACLs, from the registry)
    packline-admin acls --apply [--user KIND=NAME ...] [--password-env KIND=VARIABLE ...]
                        (create them on the cluster as the admin user; --remove deletes them)

Every command reads PACKLINE_KAFKA_BOOTSTRAP_SERVERS, PACKLINE_TOPIC_PREFIX and the Kafka security
settings (PACKLINE_KAFKA_SECURITY_PROTOCOL, ..._SASL_*, ..._SSL_*) like the services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import httpx
from packline_contracts.topics import SERVICES, dead_letter_topic

from packline_core import deadletters
from packline_core.acls import AclError, acls, apply_acls, kafka_acls_commands, user_name
from packline_core.kafka import KafkaSettings
from packline_core.reconcile import reconcile
from packline_core.rewind import GroupNotEmpty, rewind_service
from packline_core.settings import load_settings
from packline_core.topics import create_topics

# The environment variables packline-admin reads (docker-compose.yml is checked against them).
ENV_NAMES = frozenset(
    {"PACKLINE_TOPIC_PREFIX", "PACKLINE_PARTITIONS"}
    | {f"PACKLINE_{name.upper()}" for name in KafkaSettings.model_fields}
)


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    """The environment's Kafka connection, with the servers given on the command line."""
    settings = load_settings(KafkaSettings)
    return settings.model_copy(update={"kafka_bootstrap_servers": args.bootstrap_servers})


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    common.add_argument("--prefix", default=os.environ.get("PACKLINE_TOPIC_PREFIX", ""))

    parser = argparse.ArgumentParser(prog="packline-admin")
    commands = parser.add_subparsers(dest="command", required=True)
    topics = commands.add_parser(
        "create-topics", parents=[common], help="create the registry's topics (idempotent)"
    )
    topics.add_argument(
        "--partitions", type=int, default=int(os.environ.get("PACKLINE_PARTITIONS", "12"))
    )
    topics.add_argument("--replication-factor", type=int, default=1)

    letters = commands.add_parser("dead-letters", help="list or re-drive a service's dead letters")
    actions = letters.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "print every dead letter, one JSON object a line"),
        ("redrive", "publish dead letters back to the topics they came from"),
    ):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("--service", required=True, choices=SERVICES)
        if action == "redrive":
            which = sub.add_mutually_exclusive_group(required=True)
            which.add_argument("--all", action="store_true")
            which.add_argument(
                "--at",
                action="append",
                metavar="PARTITION:OFFSET",
                help="a dead letter's place on the dead-letter topic (see 'list'); repeatable",
            )
    rewind = commands.add_parser(
        "rewind",
        parents=[common],
        help="move a stopped service's consumer groups to the start of their topics (replay)",
    )
    rewind.add_argument("--service", required=True, choices=SERVICES)
    principals = commands.add_parser(
        "acls",
        help="print the ACLs of every Packline principal, derived from the topic registry",
    )
    principals.add_argument("--prefix", default=os.environ.get("PACKLINE_TOPIC_PREFIX", ""))
    principals.add_argument(
        "--format",
        choices=("lines", "kafka-acls"),
        default="lines",
        help="lines: 'PRINCIPAL TOPIC|GROUP NAME OPERATION' (deploy/kafka/kafka.sh acls reads "
        "them); kafka-acls: kafka-acls.sh commands for a production cluster",
    )
    principals.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    applying = principals.add_mutually_exclusive_group()
    applying.add_argument(
        "--apply",
        action="store_true",
        help="create the ACLs on the cluster (idempotent), connecting as the admin user of the "
        "PACKLINE_KAFKA_* settings, which needs ALTER on the cluster",
    )
    applying.add_argument("--remove", action="store_true", help="delete them from the cluster")
    principals.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="KIND=NAME",
        help="the SCRAM user of a service or outside producer when it is not packline-KIND "
        "(e.g. calendar=clinic-a-calendar); repeatable",
    )
    principals.add_argument(
        "--password-env",
        action="append",
        default=[],
        metavar="KIND=VARIABLE",
        help="with --apply: also create (or set again) the SCRAM user of KIND, with the password "
        "in the environment variable VARIABLE (never on the command line); repeatable",
    )
    principals.add_argument(
        "--scram-mechanism",
        choices=("SCRAM-SHA-256", "SCRAM-SHA-512"),
        help="the users' mechanism (default: PACKLINE_KAFKA_SASL_MECHANISM when it is SCRAM, "
        "otherwise SCRAM-SHA-256, e.g. when the admin logs in with PLAIN)",
    )
    check = commands.add_parser(
        "reconcile", help="check that the three services agree on every link (I3); exit 1 if not"
    )
    for name, port in (("calendar", 8081), ("invoicing", 8082), ("matcher", 8083)):
        check.add_argument(f"--{name}-url", default=f"http://127.0.0.1:{port}")
    check.add_argument(
        "--token",
        default=os.environ.get("PACKLINE_STAFF_TOKEN"),
        help="a staff token of the services (default: PACKLINE_STAFF_TOKEN)",
    )
    return parser


async def _reconcile(args: argparse.Namespace) -> bool:
    urls = {name: getattr(args, f"{name}_url") for name in ("calendar", "invoicing", "matcher")}
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    clients = {
        name: httpx.AsyncClient(base_url=url, headers=headers, timeout=30)
        for name, url in urls.items()
    }
    try:
        result = await reconcile(clients)
    except httpx.HTTPError as error:
        print(f"cannot read the services' links: {error!r} (are they running? is the token right?)")
        return False
    finally:
        for client in clients.values():
            await client.aclose()
    for line in result.pending:
        print(f"pending: {line}")
    for line in result.disagreements:
        print(f"DISAGREE: {line}")
    verdict = "agree" if result.agreed else "do NOT agree"
    print(
        f"{result.links} link(s); the three services {verdict}"
        + (" (not quiet yet: run again)" if result.pending and not result.disagreements else "")
    )
    return result.agreed


async def _dead_letters(args: argparse.Namespace) -> None:
    topic = args.prefix + dead_letter_topic(args.service).name
    letters = await deadletters.read_all(_kafka(args), topic)
    if args.action == "list":
        for letter in letters:
            print(
                json.dumps(
                    {
                        "at": f"{letter.partition}:{letter.offset}",
                        "origin": "/".join(str(part) for part in letter.origin),
                        "reason": letter.header("reason"),
                        "consumer": letter.header("consumer"),
                        "attempts": int(letter.header("attempts")),
                        "when": letter.header("at"),
                        "key": (letter.key or b"").decode(errors="replace"),
                        "value": (letter.value or b"")[:500].decode(errors="replace"),
                        "stored": letter.stored_id,
                    }
                )
            )
        print(f"{len(letters)} dead letter(s) on {topic}")
        return
    chosen = letters
    if not args.all:
        wanted = {tuple(int(part) for part in place.split(":", 1)) for place in args.at}
        chosen = [letter for letter in letters if (letter.partition, letter.offset) in wanted]
        missing = wanted - {(letter.partition, letter.offset) for letter in chosen}
        if missing:
            raise SystemExit(f"no dead letter at {sorted(missing)} on {topic}")
    sent = await deadletters.redrive(_kafka(args), chosen)
    for letter in sent:
        print(f"re-drove {letter.partition}:{letter.offset} to {letter.origin[0]}")
    for letter in chosen:
        if letter.stored_id is not None:
            print(
                f"left {letter.partition}:{letter.offset}: only a reference; the record is row"
                f" {letter.stored_id} of dead_letter_store in {args.service}'s database"
            )
    print(f"{len(sent)} dead letter(s) re-driven")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        kind, _, value = item.partition("=")
        if not kind or not value:
            raise SystemExit(f"{what} takes KIND=VALUE, not {item!r}")
        pairs[kind] = value
    return pairs


def _acls(args: argparse.Namespace) -> None:
    try:
        wanted = acls(args.prefix, _pairs(args.user, "--user"))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if not (args.apply or args.remove):
        if args.password_env:
            raise SystemExit("--password-env goes with --apply")
        if args.format == "lines":
            print("\n".join(acl.line() for acl in wanted))
        else:
            print("\n".join(kafka_acls_commands(args.prefix)))
        return
    users = _pairs(args.user, "--user")
    passwords = {}
    for kind, variable in _pairs(args.password_env, "--password-env").items():
        secret = os.environ.get(variable)
        if not secret:
            raise SystemExit(f"--password-env {kind}={variable}: {variable} is not set")
        passwords[users.get(kind) or user_name(kind)] = secret
    kafka = _kafka(args)
    try:
        asyncio.run(
            apply_acls(
                kafka,
                wanted,
                remove=args.remove,
                passwords=passwords,
                mechanism=args.scram_mechanism
                or (
                    kafka.kafka_sasl_mechanism
                    if kafka.kafka_sasl_mechanism.startswith("SCRAM-")
                    else "SCRAM-SHA-256"
                ),
            )
        )
    except AclError as error:
        raise SystemExit(str(error)) from None
    principals = sorted({acl.principal for acl in wanted})
    verb = "removed" if args.remove else "applied"
    if passwords:
        print(f"set {len(passwords)} SCRAM user(s): {', '.join(sorted(passwords))}")
    print(f"{verb} {len(wanted)} ACL(s) of {len(principals)} principal(s): {', '.join(principals)}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "create-topics":
        created = asyncio.run(
            create_topics(
                _kafka(args),
                partitions=args.partitions,
                replication_factor=args.replication_factor,
                prefix=args.prefix,
            )
        )
        for name in created:
            print(f"created topic {name}")
        if not created:
            print("all topics exist")
    elif args.command == "rewind":
        try:
            groups = asyncio.run(rewind_service(_kafka(args), args.service, args.prefix))
        except GroupNotEmpty as error:
            raise SystemExit(f"not rewound: {error}") from None
        for group in groups:
            print(f"rewound {group} to the earliest offsets")
    elif args.command == "dead-letters":
        asyncio.run(_dead_letters(args))
    elif args.command == "acls":
        _acls(args)
    elif args.command == "reconcile" and not asyncio.run(_reconcile(args)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
