"""``socs-tcp agent ARGS...``: run an OCS agent exactly as ``ocs-agent-cli ARGS...``,
with ``socs.tcp.TCPInterface`` switched to socs_tcp's first.

It takes what ``ocs-agent-cli`` takes (``--instance-id``, ``--site-*``,
``--crossbar-timeout``, ``--agent FILE --entrypoint NAME``, and the
``INSTANCE_ID``/``SITE_HUB``/``SITE_HTTP``/``SITE_HOST``/``CROSSBAR_TIMEOUT``
environment), and nothing else, so switching a site is changing the launcher
only. Before the agent's module is imported it

1. declares that the agent runs the reactor in its main thread
   (``socs_tcp.set_reactor_owner('application')``);
2. switches ``socs.tcp.TCPInterface`` to socs_tcp's (:func:`socs_tcp.compat.install`;
   ``SOCS_TCP_FORCE=1`` accepts a socs release socs_tcp was not checked against);
3. arranges one log line, through the agent's own log (``twisted.logger``, so it
   is in the OCS log file too), saying which TCP base is in use;

then checks the launch (:mod:`socs_tcp._site_checks`: config dir, site file,
host block, instance id, plugin, flags) and hands over to ``ocs.agent_cli.main``.
Exit status 2, with the reason in one line on stderr, when the switch is
refused (socs missing or unknown) or a check fails.
"""

from __future__ import annotations

import sys

from twisted.logger import Logger

from socs_tcp import _site_checks, compat, set_reactor_owner

log = Logger(namespace='socs_tcp._agent_cli')

USAGE = """\
usage: socs-tcp agent [ocs-agent-cli arguments]

Runs an OCS agent exactly as ocs-agent-cli does, with socs.tcp.TCPInterface
switched to socs_tcp.TCPInterface before the agent is imported. Switch back
by launching with ocs-agent-cli again. SOCS_TCP_FORCE=1 accepts a socs release
socs_tcp was not checked against. The arguments are ocs-agent-cli's:
"""


def _announce(line: str) -> None:
    log.info('{line}', line=line)


def main(argv: list[str] | None = None) -> int:
    """Switch socs.tcp to socs_tcp, then run ``ocs.agent_cli.main(argv)``.

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
        compat.install()
    except compat.CompatError as exc:
        sys.stderr.write(f'socs-tcp agent: {exc}\n')
        return 2
    # After install(): the checks import the agent's module to read its flags.
    if _site_checks.refuse(argv):
        return 2

    from ocs import agent_cli  # after install(): it imports the agent's module

    # OCS agents import the default reactor through ocs.ocs_agent anyway (no
    # SOCS agent installs another), so importing it here changes nothing.
    from twisted.internet import reactor

    # Logged once the agent runs its reactor: by then OCS has attached its log
    # file observer and the runner has begun logging to stdout, so the line is
    # in both (an event logged earlier would miss the file).
    reactor.callWhenRunning(_announce, compat.describe())
    return agent_cli.main(argv) or 0


if __name__ == '__main__':
    sys.exit(main())
