"""``packline-admin``: operations commands that are not one service's.

    packline-admin create-topics [--partitions N] [--replication-factor N] [--prefix P]

Reads PACKLINE_KAFKA_BOOTSTRAP_SERVERS and PACKLINE_TOPIC_PREFIX like the services do.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from packline_core.topics import create_topics

# The environment variables packline-admin reads (docker-compose.yml is checked against them).
ENV_NAMES = frozenset(
    {"PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "PACKLINE_TOPIC_PREFIX", "PACKLINE_PARTITIONS"}
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="packline-admin")
    commands = parser.add_subparsers(dest="command", required=True)
    topics = commands.add_parser("create-topics", help="create the registry's topics (idempotent)")
    topics.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    topics.add_argument("--prefix", default=os.environ.get("PACKLINE_TOPIC_PREFIX", ""))
    topics.add_argument(
        "--partitions", type=int, default=int(os.environ.get("PACKLINE_PARTITIONS", "12"))
    )
    topics.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)

    if args.command == "create-topics":
        created = asyncio.run(
            create_topics(
                args.bootstrap_servers,
                partitions=args.partitions,
                replication_factor=args.replication_factor,
                prefix=args.prefix,
            )
        )
        for name in created:
            print(f"created topic {name} ({args.partitions} partitions)")
        if not created:
            print("all topics exist")


if __name__ == "__main__":
    main()
