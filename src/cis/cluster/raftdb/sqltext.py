"""A small SQLite tokenizer: just enough to read SQL text without executing it.

It never decides whether SQL is *safe*; SQLite's authorizer does that (``authorizer.py``). It
answers three narrow questions at the boundary:

- the first keyword of a statement (``EXPLAIN`` and ``VACUUM`` cannot be prepared under
  ``EXPLAIN`` and are classified from their keyword);
- the statement with every bound parameter replaced by ``NULL``, so that it can be wrapped in a
  temporary view whose ``table_info`` reveals the declared types of the result columns
  (SQLite refuses parameters in views);
- the string literals, to spot ``'now'`` handed to a date/time function.

Token grammar after https://www.sqlite.org/lang_expr.html (literals, parameters) and
https://www.sqlite.org/lang_keywords.html (the four identifier quotings).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["first_keyword", "null_parameters", "string_literals", "tokens"]

_TOKEN: Final = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<blob>[xX]'[0-9a-fA-F]*'?)
    | (?P<string>'(?:[^']|'')*'?)
    | (?P<quoted>"(?:[^"]|"")*"?|\[[^\]]*\]?|`(?:[^`]|``)*`?)
    | (?P<param>\?[0-9]*|[:@$][A-Za-z0-9_]+(?:::[A-Za-z0-9_]+)*(?:\([^)]*\))?)
    | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    | (?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
    | (?P<op>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(sql: str) -> list[tuple[str, str]]:
    """``(kind, text)`` for every token of ``sql``, whitespace and comments included."""
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group()))
    return out


_FIRST_WORD: Final = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*([A-Za-z_]+)?", re.DOTALL
)


def first_keyword(sql: str) -> str:
    """The first word of ``sql`` upper-cased, skipping whitespace and comments ('' if none)."""
    match = _FIRST_WORD.match(sql)
    word = match.group(1) if match else None
    return word.upper() if word else ""


def null_parameters(sql: str) -> str:
    """``sql`` with every parameter (``?``, ``?7``, ``:a``, ``@a``, ``$a``) replaced by NULL."""
    return "".join("NULL" if kind == "param" else text for kind, text in tokens(sql))


def string_literals(sql: str) -> list[str]:
    """The values of the string literals in ``sql`` (quotes removed, ``''`` unescaped)."""
    out: list[str] = []
    for kind, text in tokens(sql):
        if kind == "string":
            body = text[1:-1] if len(text) >= 2 and text.endswith("'") else text[1:]
            out.append(body.replace("''", "'"))
    return out
