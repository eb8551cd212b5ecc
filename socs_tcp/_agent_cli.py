"""``socs-tcp agent ARGS...``: run an OCS agent exactly as ``ocs-agent-cli ARGS...``,
with SOCS's TCP transports switched to socs_tcp first.

It takes what ``ocs-agent-cli`` takes (``--instance-id``, ``--site-*``,
``--crossbar-timeout``, ``--agent FILE --entrypoint NAME``, and the
``INSTANCE_ID``/``SITE_HUB``/``SITE_HTTP``/``SITE_HOST``/``CROSSBAR_TIMEOUT``
environment), and nothing else, so switching a site is changing the launcher
only. It does what ``SOCS_TCP=1`` in the environment does for any Python
process (:mod:`socs_tcp._socs._activation`), with all transports selected
unless ``SOCS_TCP`` says otherwise. Before the agent's module is imported it

1. declares that the agent runs the reactor in its main thread
   (``socs_tcp.set_reactor_owner('application')``);
2. switches ``socs.tcp.TCPInterface`` to socs_tcp's at once
   (:func:`socs_tcp.compat.install`; ``SOCS_TCP_FORCE=1`` accepts a socs
   release socs_tcp was not checked against), and the other selected
   transports as SOCS's modules are imported;
3. arranges one log line, through the agent's own log (``twisted.logger``, so it
   is in the OCS log file too), saying which transports are on socs_tcp;

then hands over to ``ocs.agent_cli.main``. Exit status 2, with the reason on
stderr, when the switch is refused (socs missing or unknown, a bad ``SOCS_TCP``).
"""

from __future__ import annotations

import os
import sys

from socs_tcp import compat, set_reactor_owner
from socs_tcp._socs import _activation
from socs_tcp._socs._registry import ENV, SelectionError, parse_selection

USAGE = """\
usage: socs-tcp agent [ocs-agent-cli arguments]

Runs an OCS agent exactly as ocs-agent-cli does, with SOCS's TCP transports
(socs.tcp.TCPInterface, Prologix, pyserial socket://...) switched to socs_tcp
before the agent is imported; SOCS_TCP=tcp,prologix,... selects some only.
Switch back by launching with ocs-agent-cli again. SOCS_TCP_FORCE=1 accepts a
socs release socs_tcp was not checked against. The arguments are ocs-agent-cli's:
"""


def main(argv: list[str] | None = None) -> int:
    """Switch SOCS's transports to socs_tcp, then run ``ocs.agent_cli.main(argv)``.

    Returns
    -------
    int
        2 if the switch was refused; otherwise whatever the agent returns
        (agents normally run until stopped; ``ocs-agent-cli`` exits through
        ``sys.exit`` on its own errors).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ('-h', '--help') for a in argv):
        sys.stdout.write(USAGE)
        sys.stdout.flush()
        from ocs import agent_cli
        return agent_cli.main(argv) or 0   # argparse prints its help and exits
    set_reactor_owner('application')
    try:
        names = parse_selection(os.environ.get(ENV, '1'))
        if 'tcp' in names:
            compat.install()   # at once, so that a refusal is reported before the agent starts
    except (SelectionError, compat.CompatError) as exc:
        sys.stderr.write(f'socs-tcp agent: {exc}\n')
        return 2

    from ocs import agent_cli  # after install(): it imports the agent's module

    # OCS agents import the default reactor through ocs.ocs_agent anyway (no
    # SOCS agent installs another), so importing it here changes nothing; with
    # it imported, the line saying which transports are on socs_tcp is logged
    # once the agent runs its reactor: by then OCS has attached its log file
    # observer and the runner has begun logging to stdout, so the line is in both.
    from twisted.internet import reactor  # noqa: F401
    _activation.activate(names)
    return agent_cli.main(argv) or 0


if __name__ == '__main__':
    sys.exit(main())
