"""``_prepared.Statement``: one statement text as PREPARE and EXECUTE (pure, no database)."""

from __future__ import annotations

import pytest

from sayiir_django._prepared import Statement


def test_each_placeholder_becomes_one_typed_parameter_in_order_of_first_use() -> None:
    statement = Statement.of(
        "SELECT %(a)s::text, %(b)s::int8[] WHERE x = %(a)s::text AND y LIKE 'z%%'"
    )

    assert statement.prepare == (
        f"PREPARE {statement.name} (text, int8[]) AS "
        "SELECT $1::text, $2::int8[] WHERE x = $1::text AND y LIKE 'z%'"
    )
    assert statement.execute == f"EXECUTE {statement.name}(%(a)s::text, %(b)s::int8[])"


def test_the_name_follows_the_text() -> None:
    one, same, other = (Statement.of(f"SELECT %(a)s::{t}") for t in ("text", "text", "int4"))

    assert one.name == same.name != other.name
    assert one.name.startswith("sayiir_")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("SELECT %(a)s", "has no ::type"), ("SELECT %(a)s::text, %(a)s::int4", "two types")],
)
def test_a_placeholder_must_have_one_type(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Statement.of(text)
