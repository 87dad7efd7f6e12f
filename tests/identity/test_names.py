from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cis.identity import InvalidName, node_name_from_hostname, validate_node_name
from cis.identity.names import NODE_NAME_RE, node_id_of_server_name


@pytest.mark.parametrize("name", ["a", "n1", "munin-macmini", "0", "a" * 63, "a-b-c", "9x"])
def test_valid_names(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "A", "a_b", "a.b", "a" * 64, "é", "a b", "a\n", "ab/c"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidName, match="invalid node name"):
        validate_node_name(name)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("Munin-MacMini.local", "munin-macmini"),
        ("my_host", "my-host"),
        ("--", "cis-node"),
        ("", "cis-node"),
        ("x" * 80, "x" * 63),
    ],
)
def test_node_name_from_hostname(hostname: str, expected: str) -> None:
    assert node_name_from_hostname(hostname) == expected


@given(st.text(max_size=100))
def test_node_name_from_any_hostname_is_valid(hostname: str) -> None:
    assert NODE_NAME_RE.fullmatch(node_name_from_hostname(hostname))


def test_node_id_of_server_name() -> None:
    assert node_id_of_server_name("n1.cis.local") == "n1"
    assert node_id_of_server_name("matrix.org") is None
    assert node_id_of_server_name("A.cis.local") is None
