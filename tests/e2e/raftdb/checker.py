"""A linearizability checker: Wing & Gong's search with Lowe's memoisation, per key.

This follows the algorithm as Porcupine (``checker.go``, ``checkSingle``) and Knossos (``wgl.clj``)
implement it (Horn & Kroening, "Faster linearizability checking via P-compositionality",
arXiv 1504.00204):

1. **Partition** the history by key: linearizability is local (Herlihy & Wing), so each
   register is checked on its own.
2. Turn each operation into a call event and a return event, sort them by time (calls first on
   ties, the permissive reading of equal timestamps), and link them in a doubly linked list.
3. Walk the list: at a call, try to linearize the operation now (the model accepts its output
   from the current state, and the pair (set of linearized operations, state) was not tried
   before); if so, lift its call and return out of the list and start again from the head. At a
   return, the operation it closes had to be linearized by then: backtrack (undo the last
   choice, put its events back, try the next candidate). An empty list means a linearization
   exists; backtracking from an empty stack means none does.

Operations whose outcome is unknown (a timeout, a lost connection, "outcome unknown" from the
service) get a return time of infinity and no output check: linearizing one at the very end is
the same as it never happening, so "may or may not have taken effect" is covered (Porcupine
issue #8). A CAS that matched no row completed with ``False``. Histories are capped in size and
the search in time; past either the answer is ``UNKNOWN`` rather than a guess.

The model is a register per key: ``read() -> value`` (``None`` before any write),
``write(v)``, ``cas(expected, new) -> bool``, which succeeds only on an existing value equal to
``expected`` (it is an ``UPDATE … WHERE``: no row, nothing to update).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

INFINITY = float("inf")
MAX_OPS_PER_KEY = 5_000


class Verdict(Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"  # too large or out of time


@dataclass(frozen=True, slots=True)
class Op:
    """One operation by one client on one key; ``ret`` is None when the outcome is unknown."""

    client: int
    key: str
    kind: str  # "read", "write", "cas"
    value: Any = None  # write: the value; cas: (expected, new)
    output: Any = None  # read: the value seen; cas: True/False
    call: float = 0.0
    ret: float | None = None

    @property
    def unknown(self) -> bool:
        return self.ret is None


@dataclass(slots=True)
class Result:
    verdict: Verdict
    key: str | None = None
    detail: str = ""
    ops_checked: int = 0
    per_key: dict[str, Verdict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.LINEARIZABLE


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register model: may ``op`` happen from ``state``, and what state follows."""
    if op.kind == "write":
        return True, op.value
    if op.kind == "read":
        if op.unknown:
            return True, state
        return op.output == state, state
    if op.kind == "cas":
        # An UPDATE … WHERE v = expected: it needs a row (a state other than None).
        expected, new = op.value
        matches = state is not None and state == expected
        if op.unknown:
            return True, (new if matches else state)
        if op.output:
            return matches, new
        return not matches, state
    raise ValueError(f"unknown operation {op.kind!r}")


class _Node:
    __slots__ = ("is_call", "match", "next", "op_id", "prev", "time")

    def __init__(self, op_id: int, is_call: bool, t: float) -> None:
        self.op_id = op_id
        self.is_call = is_call
        self.time = t
        self.prev: _Node | None = None
        self.next: _Node | None = None
        self.match: _Node | None = None


def _lift(node: _Node) -> None:
    for n in (node, node.match):
        assert n is not None
        assert n.prev is not None
        n.prev.next = n.next
        if n.next is not None:
            n.next.prev = n.prev


def _unlift(node: _Node) -> None:
    for n in (node.match, node):  # reverse order of lifting
        assert n is not None
        assert n.prev is not None
        n.prev.next = n
        if n.next is not None:
            n.next.prev = n


def check_key(ops: list[Op], deadline: float) -> tuple[Verdict, str]:
    """WGL on the operations of one key (see the module docstring)."""
    if len(ops) > MAX_OPS_PER_KEY:
        return Verdict.UNKNOWN, f"{len(ops)} operations exceed the cap of {MAX_OPS_PER_KEY}"
    events: list[tuple[float, int, _Node]] = []
    for i, op in enumerate(ops):
        call = _Node(i, True, op.call)
        ret = _Node(i, False, INFINITY if op.ret is None else op.ret)
        call.match = ret
        events.append((op.call, 0, call))
        events.append((ret.time, 1, ret))
    events.sort(key=lambda e: (e[0], e[1]))
    head = _Node(-1, False, -INFINITY)
    prev = head
    for _, _, node in events:
        prev.next = node
        node.prev = prev
        prev = node
    state: Any = None
    linearized = 0
    cache: set[tuple[int, Any]] = {(0, None)}
    stack: list[tuple[_Node, Any]] = []
    entry = head.next
    steps = 0
    longest = 0
    while head.next is not None:
        steps += 1
        if steps % 4096 == 0 and time.monotonic() > deadline:
            return Verdict.UNKNOWN, "out of time"
        assert entry is not None
        if entry.is_call:
            op = ops[entry.op_id]
            ok, new_state = step(state, op)
            if ok:
                new_lin = linearized | (1 << entry.op_id)
                key = (new_lin, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    longest = max(longest, len(stack))
                    state = new_state
                    linearized = new_lin
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                op = ops[entry.op_id]
                return (
                    Verdict.NOT_LINEARIZABLE,
                    f"no linearization: at most {longest} of {len(ops)} operations could be"
                    f" ordered; stuck at the return of {op}",
                )
            top, state = stack.pop()
            linearized &= ~(1 << top.op_id)
            _unlift(top)
            entry = top.next
    return Verdict.LINEARIZABLE, ""


def check(history: Iterable[Op], *, time_limit_s: float = 30.0) -> Result:
    """Check a whole history, key by key; the first failing key is reported."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    total = 0
    for op in history:
        if op.kind == "read" and op.unknown:
            continue  # a read that did not complete observed nothing
        by_key[op.key].append(op)
        total += 1
    deadline = time.monotonic() + time_limit_s
    result = Result(Verdict.LINEARIZABLE, ops_checked=total)
    for key in sorted(by_key):
        verdict, detail = check_key(by_key[key], deadline)
        result.per_key[key] = verdict
        if verdict is Verdict.NOT_LINEARIZABLE:
            if result.verdict is not Verdict.NOT_LINEARIZABLE:
                result.verdict = verdict
                result.key = key
                result.detail = detail
        elif verdict is Verdict.UNKNOWN and result.verdict is Verdict.LINEARIZABLE:
            result.verdict = Verdict.UNKNOWN
            result.key = key
            result.detail = detail
    return result
