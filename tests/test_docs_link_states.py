"""The Developer Guide's link-state diagram and table are generated from ``socs_tcp._state.TRANSITIONS``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from socs_tcp._state import TRANSITIONS, LinkState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'docs' / '_ext'))
import link_states  # noqa: E402  (docs/_ext is not a package)


def test_every_state_and_transition_is_drawn():
    dot = link_states.dot_source()
    edges = {(a, b): label.split('\\n')
             for a, b, label in re.findall(r'^\s*(\w+) -> (\w+) \[label="([^"]*)"', dot, re.M)}
    for state in LinkState:
        assert re.search(rf'^\s*{state.value}\b[^-]*;$', dot, re.M), state
    for (state, event), (target, _) in TRANSITIONS.items():
        assert event.value in edges[state.value, target.value], (state, event, target)
    assert sum(len(events) for events in edges.values()) == len(TRANSITIONS)


def test_the_table_names_every_action():
    rows = link_states.transitions()
    assert [(s, e) for s, e, _, _ in rows] == [(s.value, e.value) for s, e in TRANSITIONS]
    assert all(callable(action) and action.__doc__ for _, _, _, action in rows)
