"""One Simulator Reference page per device ``socs-tcp simulate`` knows, generated at build time.

A simulator registered with ``socs-tcp simulate`` gets its page without anyone
editing the docs: its kind, how to run it, its module's documentation (the
command set) and the fault controls every simulator takes.
"""

from __future__ import annotations

from pathlib import Path

PAGE = """\
{title}
{underline}

.. code-block:: bash

   socs-tcp simulate {kind} --port 0 --control-port 0   # prints PORT <n> and CONTROL <n>

Served by ``{module}.{cls}``. Every fault of the :doc:`control channel <../control>` works on it.

.. automodule:: {module}
   :no-members:{no_index}
"""


def devices() -> dict[str, tuple[str, str]]:
    """kind -> (module, class) of every simulator ``socs-tcp simulate`` runs."""
    from socs_tcp.sim import cli

    found = getattr(cli, 'DEVICES', None)
    if found is None:
        from socs_tcp.sim.devices import SIMULATORS as found
    return dict(found)


def write_pages(app) -> None:
    out = Path(app.srcdir) / 'simulators' / 'devices'
    out.mkdir(parents=True, exist_ok=True)
    wanted = {}
    documented: set[str] = set()   # a module serving several kinds is indexed on its first page
    for kind, (module, cls) in sorted(devices().items()):
        title = f'``{kind}``'
        no_index = '\n   :no-index:' if module in documented else ''
        documented.add(module)
        wanted[f'{kind}.rst'] = PAGE.format(title=title, underline='=' * len(title), kind=kind,
                                            module=module, cls=cls, no_index=no_index)
    for old in out.glob('*.rst'):
        if old.name not in wanted:
            old.unlink()
    for name, text in wanted.items():
        path = out / name
        if not path.exists() or path.read_text() != text:   # unchanged pages keep Sphinx's cache
            path.write_text(text)


def setup(app):
    app.connect('builder-inited', write_pages)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
