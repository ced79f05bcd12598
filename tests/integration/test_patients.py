"""The patient directory and finding patients by name (R16), through the real broker and
database: entries published straight to the directory topic (as a patient-records service
would) and entries registered by command both become searchable; search ignores case, accents
and word order; a booking never waits for its patient's name."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from packline_contracts.appointments import AppointmentBooked
from packline_contracts.envelope import Envelope, encode
from packline_contracts.patients import (
    PatientContact,
    PatientRegistered,
    PatientUpdated,
    RegisterPatient,
    UpdatePatient,
)
from packline_contracts.topics import CALENDAR_EVENTS, PATIENT_DIRECTORY
from packline_contracts.topics import dead_letter_topic as dead_letter_topic_of
from packline_core import deadletters
from packline_core.service import Service

from tests.clinic import booking, days_ahead, patient
from tests.conftest import Infrastructure, ReadEvents, StartService
from tests.helpers import caught_up, eventually, get_until
from tests.kcat import kcat
from tests.system import calendar_alone, http

pytestmark = pytest.mark.infra


@pytest.fixture
async def calendar(start_service: StartService, producer: Any) -> Service:
    return await calendar_alone(start_service, producer)


def ids(answer: dict[str, Any]) -> list[str]:
    return [found["patient_id"] for found in answer["patients"]]


async def found_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/patients", params=params)
    assert response.status_code == 200, response.text
    return ids(response.json())


async def test_entries_from_the_records_service_and_from_commands_are_found_by_name(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    directory = await read_events(PATIENT_DIRECTORY)
    zoe, other_jane = patient(), patient()
    await producer.send(
        PatientRegistered(
            patient_id=zoe,
            name="Jane Zoë Smith",
            preferred_name="Zo",
            date_of_birth=date(1985, 7, 14),
            contact=PatientContact(email="zoe@example.org"),
        )
    )
    await producer.send(
        RegisterPatient(patient_id=other_jane, name="Jane Smith", date_of_birth=date(1990, 1, 2))
    )
    async with http(calendar) as client:
        both = await get_until(
            client,
            "/patients",
            lambda answer: set(ids(answer)) >= {zoe, other_jane},
            params={"name": "jane smith"},
            what="both Jane Smiths in the directory",
        )
        assert {found["name"] for found in both["patients"]} >= {"Jane Zoë Smith", "Jane Smith"}
        # Part of a name, any case, any order, with or without the accent.
        for query in ("jan smi", "SMITH jane", "zoe", "Zoë", "ZOË SMITH", "smi zo"):
            assert zoe in await found_ids(client, name=query), query
        assert other_jane not in await found_ids(client, name="zoe")
        assert await found_ids(client, name="jane zoe smith x") == []
        # The date of birth tells the two apart.
        assert await found_ids(client, name="jane smith", date_of_birth="1990-01-02") == [
            other_jane
        ]
        assert await found_ids(client, date_of_birth="1985-07-14") == [zoe]

        entry = (await client.get(f"/patients/{zoe}")).json()
        assert entry["name"] == "Jane Zoë Smith"
        assert entry["preferred_name"] == "Zo"
        assert entry["date_of_birth"] == "1985-07-14"
        assert entry["contact"] == {"email": "zoe@example.org", "phone": None}
        unknown = await client.get(f"/patients/{patient()}")
        assert unknown.status_code == 404

    # The command's entry went to the directory topic, published by the calendar.
    published = await directory.wait_for(
        PatientRegistered, lambda e: e.payload.patient_id == other_jane
    )
    assert published.producer == "calendar"
    assert published.key == other_jane


async def test_an_update_renames_and_an_older_record_changes_nothing(
    calendar: Service, producer: Any, infrastructure: Infrastructure
) -> None:
    who, early = patient(), patient()
    registered = await producer.send(PatientRegistered(patient_id=who, name="Anna Oldname"))
    await producer.send(UpdatePatient(patient_id=who, name="Anna Newname"))
    # An update that arrives before any registration is kept all the same.
    await producer.send(PatientUpdated(patient_id=early, name="Bruno Early"))
    async with http(calendar) as client:
        await get_until(
            client,
            "/patients",
            lambda answer: ids(answer) == [who],
            params={"name": "newname"},
            what="the renamed patient",
        )
        assert await found_ids(client, name="oldname") == []
        await get_until(
            client, "/patients", lambda a: ids(a) == [early], params={"name": "bruno ear"}
        )

        # A record older than the entry (sent late, say by a second producer) is read and
        # changes nothing; a duplicate of the first registration is dropped by the inbox.
        stale = Envelope.wrap(
            PatientUpdated(patient_id=who, name="Anna Stalename"),
            producer="patient-records",
            occurred_at=registered.occurred_at - timedelta(days=1),
        )
        topic = calendar.settings.topic(PATIENT_DIRECTORY)
        await kcat(infrastructure, topic, encode(stale).value, key=who)
        await producer.send(
            PatientRegistered(patient_id=who, name="Anna Oldname"),
            message_id=registered.message_id,
        )
        await caught_up(
            infrastructure.kafka_bootstrap,
            calendar.settings.group_id("calendar", "patients"),
            [topic],
        )
        assert (await client.get(f"/patients/{who}")).json()["name"] == "Anna Newname"
        assert await found_ids(client, name="stalename") == []
        assert await found_ids(client, name="anna") == [who]


async def test_results_come_a_page_at_a_time_in_name_order(
    calendar: Service, producer: Any
) -> None:
    family = f"Pager{patient()[-6:]}"
    members = {patient(): f"{first} {family}" for first in ("Ada", "Ben", "Cy", "Dee", "Eve")}
    for patient_id, name in members.items():
        await producer.send(PatientRegistered(patient_id=patient_id, name=name))
    async with http(calendar) as client:
        await get_until(
            client,
            "/patients",
            lambda answer: len(answer["patients"]) == 5,
            params={"name": family},
            what="the five patients of one family",
        )
        seen: list[str] = []
        url: str | None = f"/patients?name={family}&limit=2"
        pages = 0
        while url is not None:
            answer = (await client.get(url)).json()
            seen.extend(ids(answer))
            url = answer["next"]
            pages += 1
        assert pages == 3
        assert [members[patient_id] for patient_id in seen] == sorted(members.values())


async def test_a_booking_for_a_patient_not_in_the_directory_shows_the_name_once_it_arrives(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    who = patient()
    command = booking(who, days_ahead(3))
    await producer.send(command)
    await events.wait_for(
        AppointmentBooked,
        lambda e: e.payload.appointment.appointment_id == command.appointment_id,
    )
    async with http(calendar) as client:
        panel = (await client.get(f"/appointments/{command.appointment_id}")).json()
        assert panel["patient_id"] == who
        assert panel["patient_name"] is None

        await producer.send(PatientRegistered(patient_id=who, name="Carla Late"))
        await get_until(
            client,
            f"/appointments/{command.appointment_id}",
            lambda answer: answer["patient_name"] == "Carla Late",
            what="the panel to show the patient's name",
        )
        listed = (await client.get(f"/patients/{who}/appointments")).json()
        assert [a["patient_name"] for a in listed] == ["Carla Late"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "name"),
        ({"name": "!!! ..."}, "name"),
        ({"name": " ".join(f"w{n}x" for n in range(11))}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "jane", "limit": 0}, "limit"),
        ({"name": "jane", "limit": 101}, "limit"),
        ({"name": "jane", "date_of_birth": "14/07/1985"}, "date_of_birth"),
        ({"date_of_birth": "1850-01-01"}, "date_of_birth"),
        ({"name": "jane", "cursor": "not a cursor"}, "cursor"),
        ({"name": "jane", "cursor": "WzEsIDJd"}, "cursor"),  # [1, 2]
    ],
)
async def test_a_bad_search_is_refused_naming_the_field(
    calendar: Service, params: dict[str, Any], field: str
) -> None:
    async with http(calendar) as client:
        response = await client.get("/patients", params=params)
        assert response.status_code == 422, response.text
        assert ["query", field] in [problem["loc"] for problem in response.json()["detail"]]


async def test_a_malformed_directory_record_is_dead_lettered_and_the_next_one_applied(
    calendar: Service, infrastructure: Infrastructure
) -> None:
    who = patient()
    topic = calendar.settings.topic(PATIENT_DIRECTORY)
    bad = json.loads(
        encode(Envelope.wrap(PatientRegistered(patient_id=who, name="x"), producer="kcat")).value
    )
    bad["payload"]["name"] = "Secret\u0000Name"
    bad["payload"]["date_of_birth"] = "1985-02-30"
    await kcat(infrastructure, topic, json.dumps(bad).encode(), key=who)
    behind = PatientRegistered(patient_id=who, name="Dora Behind")
    await kcat(infrastructure, topic, encode(Envelope.wrap(behind, producer="kcat")).value, key=who)

    async with http(calendar) as client:
        await get_until(
            client, "/patients", lambda answer: ids(answer) == [who], params={"name": "dora beh"}
        )

    async def letter() -> Any:
        dead_letters = calendar.settings.topic(dead_letter_topic_of("calendar"))
        letters = await deadletters.read_all(infrastructure.kafka_bootstrap, dead_letters)
        return next((found for found in letters if found.key == who.encode()), None)

    dead = await eventually(letter, what="the malformed record's dead letter")
    reason = dead.header("reason")
    assert "payload.name" in reason and "payload.date_of_birth" in reason
    assert dead.header("topic") == topic
    assert "Secret" not in reason  # the reason names the field, never the patient's name
