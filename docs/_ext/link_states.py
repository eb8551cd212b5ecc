"""The link-state diagram and transition table, generated at build time from ``socs_tcp._state``.

``.. link-state-diagram::`` draws every ``(state, event) -> next state`` of
``TRANSITIONS`` with graphviz (it takes the ``graphviz`` directive's options,
``:caption:`` among them); ``.. link-transition-table::`` lists the same
transitions with each one's action and the first line of its docstring. Both
read the table itself, so the pages cannot drift from the code.
"""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from sphinx.ext.graphviz import Graphviz


def transitions() -> list[tuple[str, str, str, object]]:
    """``(state, event, next state, action)`` for every entry of the table, in its order."""
    from socs_tcp._state import TRANSITIONS

    return [(state.value, event.value, target.value, action)
            for (state, event), (target, action) in TRANSITIONS.items()]


def dot_source() -> str:
    """The graphviz source of the diagram: one node per state, one edge per transition."""
    from socs_tcp._state import LinkState

    lines = ['digraph link {',
             '    rankdir=LR;',
             '    node [shape=ellipse, fontname="sans-serif", fontsize=11];',
             '    edge [fontname="sans-serif", fontsize=10];']
    for state in LinkState:
        style = {'connected': ' [style=bold]', 'closed': ' [shape=doublecircle]'}.get(state.value, '')
        lines.append(f'    {state.value}{style};')
    # One edge per (state, next state): the events that take it, one per line.
    edges: dict[tuple[str, str], list[str]] = {}
    for state, event, target, _ in transitions():
        edges.setdefault((state, target), []).append(event)
    for (state, target), events in edges.items():
        label = '\\n'.join(events)
        close = ' color="gray50", fontcolor="gray50"' if events == ['close'] else ''
        lines.append(f'    {state} -> {target} [label="{label}"{close}];')
    lines.append('}')
    return '\n'.join(lines)


class LinkStateDiagram(Graphviz):
    """``graphviz`` with the link's states as its content."""

    required_arguments = 0
    optional_arguments = 0
    has_content = False

    def run(self):
        self.arguments = []
        self.content = StringList(dot_source().splitlines(), source='socs_tcp._state.TRANSITIONS')
        return super().run()


class LinkTransitionTable(Directive):
    """A table of every transition: state, event, next state, action and what it does."""

    has_content = False

    def run(self):
        rows = ['.. list-table::', '   :header-rows: 1', '   :widths: 14 12 14 20 40', '',
                '   * - state', '     - event', '     - next state', '     - action',
                '     - what it does']
        for state, event, target, action in transitions():
            doc = (action.__doc__ or '').strip().splitlines()
            rows += [f'   * - {state}', f'     - ``{event}``', f'     - {target}',
                     f'     - ``{action.__name__}``', f'     - {doc[0] if doc else ""}']
        container = nodes.container()
        self.state.nested_parse(StringList(rows, source='socs_tcp._state.TRANSITIONS'),
                                self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive('link-state-diagram', LinkStateDiagram)
    app.add_directive('link-transition-table', LinkTransitionTable)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
