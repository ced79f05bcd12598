"""Rewinding a service's consumer groups replays its topics; the inbox keeps every effect single,
and a running service's groups are not moved."""

from __future__ import annotations

import pytest
from packline_core.rewind import GroupNotEmpty, rewind_service

from tests.conftest import Infrastructure, StartService, same_database
from tests.helpers import eventually
from tests.integration.test_messaging_core import metric, probe, recorded, send

pytestmark = pytest.mark.infra


async def test_rewind_replays_everything_once_and_refuses_a_running_service(
    infrastructure: Infrastructure, topic_prefix: str, start_service: StartService
) -> None:
    calendar = await start_service("calendar")
    database = same_database(calendar)
    probes = [probe() for _ in range(5)]
    await send(calendar, *probes)

    async def all_recorded() -> bool:
        return await recorded(calendar, *probes) == 5

    await eventually(all_recorded, what="the five probes")

    async def refused() -> bool:
        try:
            await rewind_service(infrastructure.kafka_bootstrap, "calendar", topic_prefix)
        except GroupNotEmpty:
            return True
        return False

    assert await refused()
    await calendar.stop()
    groups = await rewind_service(infrastructure.kafka_bootstrap, "calendar", topic_prefix)
    assert f"{topic_prefix}packline.calendar.commands" in groups

    replayed = await start_service("calendar", **database)
    labels = {"consumer": "calendar.probes", "message_type": "ProbeSent"}

    async def all_read_again() -> bool:
        # At least 5: a rebalance under load may hand the same batch over twice.
        return metric(replayed, "packline_messages_deduplicated_total", **labels) >= 5

    await eventually(all_read_again, within=60, what="the replay to reach the probes")
    assert await recorded(replayed, *probes) == 5  # each still recorded exactly once
