"""How names are normalised for search (R16): case, accents and word order do not matter, and any
beginning of any word of a name finds it. The database query applies the same rule as
``matches`` (tests/integration/test_patients.py checks that end to end)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packline_calendar.patients import (
    matches,
    name_words,
    query_words,
    search_words,
    sort_name,
)
from packline_core.paging import make_cursor, read_cursor

NAMES = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "M", "N", "P", "Zs")), max_size=60
)


@pytest.mark.parametrize(
    "query",
    ["jan smi", "SMITH jane", "zoe", "Zoë", "ZOË", "zoe\u0308", "jane  zoe\tsmith", "s j z"],
)
def test_jane_zoe_smith_is_found_by_any_of_these(query: str) -> None:
    assert matches(search_words("Jane Zoë Smith"), query_words(query))


@pytest.mark.parametrize("query", ["jane x", "smithy", "zoey", "janes"])
def test_and_not_by_these(query: str) -> None:
    assert not matches(search_words("Jane Zoë Smith"), query_words(query))


def test_the_preferred_name_is_searched_too() -> None:
    assert matches(search_words("Elizabeth Jones", "Betty"), query_words("bet jon"))


@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("Søren Kierkegaard", "soren"),
        ("Łukasz Wójcik", "lukasz wojcik"),
        ("Ægir Þórsson", "aegir thors"),
        ("Mary-Jane O'Brien", "maryjane obrien"),
        ("Mary-Jane O'Brien", "mary jane o'brien"),
        ("Mary-Jane O'Brien", "brien"),
        ("Straße", "strasse"),
        ("\uff26\uff35\uff2c\uff2c Width", "full"),  # full-width letters
        ("İlker Öztürk", "ilker ozturk"),
        ("François Müller", "FRANCOIS MULLER"),
    ],
)
def test_letters_people_type_plainly(name: str, query: str) -> None:
    assert matches(search_words(name), query_words(query))


def test_words_are_split_at_anything_but_letters_and_digits() -> None:
    assert name_words("  Anne-Marie  (Annie) d'Arc, 3rd ") == [
        "anne",
        "marie",
        "annie",
        "d",
        "arc",
        "3rd",
    ]
    assert query_words("!!! ... ---") == []


def test_a_query_word_that_begins_another_is_left_out() -> None:
    assert query_words("jan jane JANE smith s") == ["smith", "jane"]


@given(NAMES, st.data())
def test_any_beginning_of_any_word_in_any_case_finds_the_name(
    name: str, data: st.DataObject
) -> None:
    words = name_words(name)
    if not words:
        return
    chosen = data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=4))
    typed = [word[: data.draw(st.integers(1, len(word)))] for word in chosen]
    query = " ".join(data.draw(st.permutations(typed)))
    assert matches(search_words(name), query_words(query))
    assert matches(search_words(name), query_words(query.upper()))


@given(NAMES)
def test_normalised_words_are_stable_plain_and_lower_case(name: str) -> None:
    words = name_words(name)
    assert name_words(" ".join(words)) == words  # normalising twice changes nothing
    for word in words:
        assert word and not any(c.isspace() for c in word)
        assert not any(unicodedata.combining(c) for c in word)
        assert word == word.casefold()
    assert sort_name(name) == " ".join(words)


@given(NAMES)
def test_accents_and_case_do_not_change_the_words(name: str) -> None:
    stripped = "".join(
        c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c)
    )
    assert name_words(stripped.upper()) == name_words(name)


@given(st.text(), st.text(min_size=1))
def test_a_cursor_reads_back_what_it_was_made_of(sort_key: str, patient_id: str) -> None:
    try:
        (sort_key + patient_id).encode()
    except UnicodeEncodeError:
        return  # never made from the database's text
    if "\x00" in sort_key + patient_id:
        return
    assert read_cursor(make_cursor([sort_key, patient_id]), 2) == [sort_key, patient_id]
