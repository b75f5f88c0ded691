"""rotator.httpio.depth_of: the nesting depth of a JSON text, strings not counted, checked against the depth of
what ``json.loads`` makes of it, for random JSON values whose strings hold brackets, quotes and backslashes (the
fast path, for texts without a backslash, and the regular expression, for texts with one)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.httpio import MAX_DEPTH, depth_of, loads

TRICKY = st.text(alphabet=st.sampled_from(list('ab[]{}"\\,: \n')), max_size=12)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=60,
)


def depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(values, st.integers(0, MAX_DEPTH + 8))
def test_depth_of_is_the_depth_json_loads_finds(value: Any, wrap: int) -> None:
    text = "[" * wrap + json.dumps(value, ensure_ascii=False) + "]" * wrap
    data = text.encode()
    expected = depth(json.loads(data))
    got = depth_of(data)
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        assert got >= expected  # the cheap bound: enough to pass what is shallow enough
    else:
        assert got == expected, (text, got, expected)


def test_brackets_inside_strings_do_not_count_with_or_without_escapes() -> None:
    deep = "[" * (MAX_DEPTH + 1)
    plain = json.dumps({"a": [deep, deep], "b": [[["x"]]]}).encode()
    escaped = json.dumps({"a": [deep + '"', deep + "\\"], "b": [[["x"]]]}).encode()
    assert b"\\" not in plain and b"\\" in escaped
    assert depth_of(plain) == depth_of(escaped) == 4
    assert loads(plain)["b"] == [[["x"]]]
    too_deep = ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode()
    try:
        loads(too_deep)
    except ValueError as exc:
        assert "nested deeper than" in str(exc)
    else:
        raise AssertionError("a text nested past MAX_DEPTH was parsed")
