"""``socs-tcp``: the command line. Each subcommand lives in the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import sys

from socs_tcp._version import __version__

# subcommand -> (module with ``main(argv) -> int``, one-line help)
SUBCOMMANDS = {
    'agent': ('socs_tcp._agent_cli', 'run an OCS agent as ocs-agent-cli does, on socs_tcp instead of socs.tcp'),
    'demo': ('socs_tcp._demo.run', 'run the demo: crossbar, simulators and agents on this machine'),
    'simulate': ('socs_tcp.sim.cli', 'run a simulated device (the sample agents\' or a SOCS device)'),
    'stack': ('socs_tcp._stack_cli', 'run a local OCS stack (crossbar and site config) to try any agent in'),
    'shell': ('socs_tcp._shell', 'talk to a device by hand: type a command, see the reply'),
}


def make_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--version`` and the subcommand (its arguments are its own)."""
    parser = argparse.ArgumentParser(prog='socs-tcp', description=__doc__)
    parser.add_argument('--version', action='version', version=f'socs-tcp {__version__}')
    parser.add_argument('command', choices=sorted(SUBCOMMANDS),
                        help='; '.join(f'{k}: {v[1]}' for k, v in sorted(SUBCOMMANDS.items())))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``socs-tcp ARGV``; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] == '--version':
        parser.parse_args(argv[:1])   # prints the version and exits 0
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.main(argv[1:]) or 0


if __name__ == '__main__':
    sys.exit(main())
