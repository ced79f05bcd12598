"""The patient directory in the calendar (R16): names from packline.patients.directory, found by
staff by name.

Entries arrive on the directory topic, from the practice's patient-records service or from the
calendar itself, which turns ``RegisterPatient`` / ``UpdatePatient`` into the same events. Only
the ``patients`` consumer writes the table, so there is one order of changes: the topic's.

Search is case-, accent- and word-order-insensitive and matches prefixes: "jan smi", "SMITH jane"
and "zoe" all find "Jane Zoë Smith". Names are normalised here, in Python (no database extension
needed), into words stored with the entry; every word of a search must begin one of them.

Logs and metrics carry patient ids only, never names (R16): nothing here logs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.patients import (
    PatientRegistered,
    PatientUpdated,
    RegisterPatient,
    UpdatePatient,
)
from packline_contracts.types import Day, PatientId
from packline_core.auth import needs
from packline_core.consumer import MessageConsumer
from packline_core.db import Connection
from packline_core.http_errors import invalid
from packline_core.openapi import NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.paging import make_cursor, read_cursor
from packline_core.scope import CallerScope, require_patient
from packline_core.service import Service

from packline_calendar.responses import PatientEntry, PatientPage

# --- normalising names ------------------------------------------------------------------------

# Letters NFKD keeps whole although people often type them without their stroke or as two
# letters: "Søren" is found by "soren", "Łukasz" by "lukasz", "Ægir" by "aegir".
_PLAIN_LETTERS = str.maketrans(
    {"ø": "o", "đ": "d", "ð": "d", "ł": "l", "ħ": "h", "\u0131": "i", "ŧ": "t"}  # U+0131: dotless i
    | {"æ": "ae", "œ": "oe", "þ": "th"}
)
_LETTERS_AND_DIGITS = re.compile(r"[^\W_]+")
MAX_SEARCH_WORDS = 10


def name_words(text: str) -> list[str]:
    """The words of ``text`` as search compares them: compatibility-decomposed, case-folded,
    without accents (combining marks), split at anything that is not a letter or a digit."""
    # Marks go before folding (which turns the iota subscript of "ᾳ" into a letter) and after
    # it (folding "İ" gives "i" and a dot above). Decomposing first also matters: U+1D434, a
    # mathematical A, has no lower case, but its NFKD "A" has.
    folded = _without_marks(_without_marks(text).casefold())
    return _LETTERS_AND_DIGITS.findall(folded.translate(_PLAIN_LETTERS))


def _without_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def search_words(name: str, preferred_name: str | None = None) -> list[str]:
    """What an entry is found by: the words of its name and preferred name, and each hyphenated
    or apostrophed name also written as one word ("Smith-Jones" is found by "smithjones" as well
    as by "smith" and "jones"; "O'Brien" by "obrien" and "brien")."""
    found: list[str] = []
    for text in (name, preferred_name or ""):
        for spaced in text.split():
            parts = name_words(spaced)
            found.extend(parts)
            if len(parts) > 1:
                found.append("".join(parts))
    return list(dict.fromkeys(found))


def query_words(text: str) -> list[str]:
    """The words a search must find, longest first. A word that begins another word of the same
    search adds nothing (any entry word the longer one begins, it begins too) and is left out."""
    words = sorted(set(name_words(text)), key=lambda word: (-len(word), word))
    return [w for i, w in enumerate(words) if not any(o.startswith(w) for o in words[:i])]


def matches(entry_words: Iterable[str], query: Iterable[str]) -> bool:
    """What the database query decides, for tests: every query word begins some entry word."""
    entry = list(entry_words)
    return all(any(word.startswith(q) for word in entry) for q in query)


def sort_name(name: str) -> str:
    return " ".join(name_words(name))


# --- keeping the directory --------------------------------------------------------------------


def register_patient_commands(commands: MessageConsumer) -> None:
    """On the calendar's commands consumer: a clinic without a patient-records service registers
    and updates its patients with commands; the calendar publishes them to the directory."""
    commands.handles(RegisterPatient)(register_patient)
    commands.handles(UpdatePatient)(update_patient)


def register_patient_directory(patients: MessageConsumer) -> None:
    patients.handles(PatientRegistered, PatientUpdated)(keep_entry)


async def register_patient(tx: Transaction, envelope: Envelope[RegisterPatient]) -> None:
    entry = PatientRegistered(**dict(envelope.payload))
    tx.publish(entry, message_id=derived_id("patient-entry", envelope.message_id))


async def update_patient(tx: Transaction, envelope: Envelope[UpdatePatient]) -> None:
    entry = PatientUpdated(**dict(envelope.payload))
    tx.publish(entry, message_id=derived_id("patient-entry", envelope.message_id))


async def keep_entry(
    tx: Transaction, envelope: Envelope[PatientRegistered | PatientUpdated]
) -> None:
    """Registered or updated, the entry replaces the one kept, unless the kept one is newer (an
    update may even come before its registration). The word index follows in the same
    statement: words no longer in the entry go, new ones come (the two sets never overlap, so
    one statement's single snapshot is enough)."""
    entry = envelope.payload
    contact = entry.contact
    await tx.conn.execute(
        "WITH kept AS ("
        " INSERT INTO patients (patient_id, name, preferred_name, date_of_birth, email, phone,"
        " recorded_at, search_words, sort_name, clinics)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (patient_id) DO UPDATE SET name = $2, preferred_name = $3,"
        " date_of_birth = $4, email = $5, phone = $6, recorded_at = $7, search_words = $8,"
        " sort_name = $9, clinics = $10, updated_at = now() WHERE patients.recorded_at <= $7"
        " RETURNING patient_id, search_words),"
        " gone AS (DELETE FROM patient_search_words AS w USING kept"
        " WHERE w.patient_id = kept.patient_id AND NOT w.word = ANY(kept.search_words))"
        " INSERT INTO patient_search_words (word, patient_id)"
        " SELECT word, kept.patient_id FROM kept, unnest(kept.search_words) AS word"
        " ON CONFLICT DO NOTHING",
        entry.patient_id,
        entry.name,
        entry.preferred_name,
        entry.date_of_birth,
        contact.email if contact else None,
        contact.phone if contact else None,
        envelope.occurred_at,
        search_words(entry.name, entry.preferred_name),
        sort_name(entry.name),
        sorted(set(entry.clinics or ())),
    )


async def patient_names(conn: Connection, patient_ids: Iterable[str]) -> dict[str, str]:
    """The directory's names of these patients (those it has): for appointments' JSON."""
    rows = await conn.fetch(
        "SELECT patient_id, name FROM patients WHERE patient_id = ANY($1::text[])",
        sorted(set(patient_ids)),
    )
    return {row["patient_id"]: row["name"] for row in rows}


async def seen_at(conn: Connection, patient_id: str) -> list[str]:
    """Where the calendar has seen a patient (clinic scope): the locations of their appointments
    (not deleted ones: a mistake places no one) and the clinics their directory entry names."""
    return list(
        await conn.fetchval(
            "SELECT coalesce(array_agg(DISTINCT place), '{}') FROM ("
            " SELECT location_id AS place FROM appointments"
            " WHERE patient_id = $1 AND status <> 'deleted'"
            " UNION ALL SELECT unnest(clinics) FROM patients WHERE patient_id = $1) AS seen",
            patient_id,
        )
    )


# The same, as a SQL condition on a patient id for lists: seen at one of the locations $n, or
# seen nowhere yet (packline_core.scope).
SEEN_HERE = (
    "(p.clinics && {n}::text[]"
    " OR EXISTS (SELECT FROM appointments AS a WHERE a.patient_id = p.patient_id"
    " AND a.status <> 'deleted' AND a.location_id = ANY({n}::text[]))"
    " OR (p.clinics = '{{}}' AND NOT EXISTS (SELECT FROM appointments AS a"
    " WHERE a.patient_id = p.patient_id AND a.status <> 'deleted')))"
)


# --- finding patients -------------------------------------------------------------------------

SEARCH_COLUMNS = "p.patient_id, p.name, p.preferred_name, p.date_of_birth, p.sort_name"
# Above every character a stored word holds: [prefix, prefix + TOP) is every word it begins.
TOP = "\U0010ffff"


def register_patient_search(service: Service) -> None:
    http = service.http

    @http.get(
        "/patients",
        dependencies=[needs("read patients")],
        tags=["patients"],
        response_model=PatientPage,
    )
    async def find_patients(
        scope: CallerScope,
        request: Request,
        name: Annotated[str | None, Query(max_length=200)] = None,
        date_of_birth: Day | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Patients by name and / or date of birth, in name order, ``limit`` at a time.

        ``name`` finds entries of which each of its words begins a word of the name or the
        preferred name, ignoring case, accents and word order ("jan smi" and "SMITH jane" find
        "Jane Zoë Smith"); ``date_of_birth`` narrows (or alone, lists that day's patients). The
        answer's ``next`` is the URL of the following page (``next_cursor`` its cursor), null on
        the last page. Patients not in the directory yet are not found (their appointments are
        still booked; see ``GET /patients/{patient_id}/appointments``). Only patients seen at
        the caller's clinics are found (or seen at none yet)."""
        words = query_words(name) if name is not None else []
        if name is not None and not words:
            raise invalid(["query", "name"], "needs at least one letter or digit")
        if len(words) > MAX_SEARCH_WORDS:
            raise invalid(["query", "name"], f"at most {MAX_SEARCH_WORDS} words")
        if not words and date_of_birth is None:
            raise invalid(["query", "name"], "give a name, a date_of_birth, or both")
        after = read_cursor(cursor, 2)
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        conditions = []
        if words:  # the longest word picks the candidates from the index; all words must match
            conditions.append(
                "p.patient_id IN (SELECT patient_id FROM patient_search_words"
                f" WHERE word >= {arg(words[0])} AND word < {arg(words[0] + TOP)})"
            )
            conditions.append(
                f"NOT EXISTS (SELECT FROM unnest({arg(words)}::text[]) AS q(word)"
                " WHERE NOT EXISTS (SELECT FROM unnest(p.search_words) AS e(word)"
                " WHERE starts_with(e.word, q.word)))"
            )
        if date_of_birth is not None:
            conditions.append(f"p.date_of_birth = {arg(date_of_birth)}")
        if after is not None:
            conditions.append(f"(p.sort_name, p.patient_id) > ({arg(after[0])}, {arg(after[1])})")
        if scope.locations is not None:
            conditions.append(SEEN_HERE.format(n=arg(scope.location_list())))
        rows = await service.pool.fetch(
            f"SELECT {SEARCH_COLUMNS} FROM patients AS p WHERE {' AND '.join(conditions)}"
            f" ORDER BY p.sort_name, p.patient_id LIMIT {arg(limit + 1)}",
            *args,
        )
        page, more = rows[:limit], len(rows) > limit
        next_cursor = make_cursor([page[-1]["sort_name"], page[-1]["patient_id"]]) if more else None
        following = request.url.include_query_params(cursor=next_cursor) if next_cursor else None
        return {
            "patients": [
                {
                    "patient_id": row["patient_id"],
                    "name": row["name"],
                    "preferred_name": row["preferred_name"],
                    "date_of_birth": row["date_of_birth"],
                }
                for row in page
            ],
            "next_cursor": next_cursor,
            "next": f"{following.path}?{following.query}" if following else None,
        }

    @http.get(
        "/patients/{patient_id}",
        dependencies=[needs("read patients")],
        tags=["patients"],
        response_model=PatientEntry,
        responses=NOT_FOUND,
    )
    async def patient_entry(patient_id: PatientId, scope: CallerScope) -> dict[str, Any]:
        """The patient's directory entry. 404 when the directory has no entry for the id (yet):
        appointments are booked for any patient id, so such a patient may well exist. 403 for a
        patient seen only at other clinics."""
        async with service.pool.acquire() as conn:
            require_patient(scope, patient_id, await seen_at(conn, patient_id))
            row = await conn.fetchrow(
                "SELECT patient_id, name, preferred_name, date_of_birth, email, phone,"
                " recorded_at, clinics FROM patients WHERE patient_id = $1",
                patient_id,
            )
        if row is None:
            raise HTTPException(404, f"no patient {patient_id} in the directory")
        contact = (
            {"email": row["email"], "phone": row["phone"]} if row["email"] or row["phone"] else None
        )
        return {
            "patient_id": row["patient_id"],
            "name": row["name"],
            "preferred_name": row["preferred_name"],
            "date_of_birth": row["date_of_birth"],
            "contact": contact,
            "clinics": list(row["clinics"]),
            "recorded_at": row["recorded_at"],
        }
