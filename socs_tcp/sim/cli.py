"""``socs-tcp simulate KIND``: run a simulated device until stopped.

KIND is ``compressor`` or ``psu`` (the sample agents' devices) or one of the
SOCS devices of `socs_tcp.sim.devices` (``cryomech-cpa``, ``lakeshore372``,
``pfeiffer-tpg366``, ``prologix``, ``moxa-dwl``, ``moxa-pmx``,
``pfeiffer-tc400``, ``hwp-pid``), or ``replay FILE``: a recording served as a
device (`socs_tcp.sim.devices.replay`).

Prints ``PORT <n>`` (the device port) and, with ``--control-port``,
``CONTROL <n>`` (the fault-control port, see `socs_tcp.sim.control`)
on stdout, one line each, flushed, once the simulator is listening; so a
script can start it with ``--port 0`` and read where it went. Logs go to
stderr. SIGTERM and SIGINT stop it cleanly (exit status 0).

``--help`` lists each device's commands and the fault controls;
``socs-tcp simulate KIND --help`` lists that kind's only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from socs_tcp import _arguments as arguments
from socs_tcp._arguments import command_line
from socs_tcp.sim._commands import help_lines
from socs_tcp.sim.devices import SIMULATORS

log = Logger(namespace='socs_tcp.sim.cli')

#: device name -> (module, class): a `DeviceServer` subclass built as ``cls(host=..., port=...)``.
DEVICES = {
    'compressor': ('socs_tcp.agents.compressor.simulator', 'CompressorSimulator'),
    'psu': ('socs_tcp.agents.power_supply.simulator', 'PowerSupplySimulator'),
    **SIMULATORS,     # the devices SOCS's own agents drive
    'replay': ('socs_tcp.sim.devices.replay', 'ReplaySimulator'),  # a recording, as a device
}


def _simulator_class(device: str) -> type:
    module, name = DEVICES[device]
    return getattr(importlib.import_module(module), name)


def device_help(device: str) -> list[str]:
    """The lines ``--help`` shows for ``device``: its kind, then its command set."""
    command_set = getattr(_simulator_class(device), 'command_set', ())
    if not command_set:
        return [f'{device}:', '  (its commands are in its module\'s docstring)']
    width = max(len(request) for request, _ in command_set)
    return [f'{device}:'] + [f'  {request:<{width}}  {what}' for request, what in command_set]


def help_epilog(devices: list[str]) -> str:
    """Each device's command set, then every fault control, one line each."""
    lines = ['device commands of each KIND (an example request, then what it does):']
    for device in devices:
        lines += ['  ' + line for line in device_help(device)]
    lines += ['', 'fault controls (one line each on the --control-port channel; e.g. '
                  '`nc 127.0.0.1 <CONTROL>`, or socs_tcp.sim.control.SimControl):']
    lines += help_lines('  ')
    return '\n'.join(lines)


class _HelpAction(argparse.Action):
    """``--help``: after a KIND, that kind's commands only; otherwise every kind's."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help='show this help (after KIND: that kind only) and exit'):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        device = getattr(namespace, 'device', None)
        parser.epilog = help_epilog([device] if device in DEVICES else sorted(DEVICES))
        parser.print_help()
        parser.exit()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='socs-tcp simulate', description=__doc__, add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-h', '--help', action=_HelpAction)
    parser.add_argument('device', metavar='KIND', choices=sorted(DEVICES),
                        help=f'which device to simulate: {", ".join(sorted(DEVICES))}')
    parser.add_argument('recording', nargs='?', default=None,
                        help='replay only: the recording to serve (SOCS_TCP_RECORD=FILE made it)')
    parser.add_argument('--link', default=None,
                        help='replay only: which device of a recording holding several (HOST:PORT)')
    parser.add_argument('--recorded-timing', action='store_true',
                        help='replay only: send each reply as late as it came when recorded')
    parser.add_argument('--host', default='127.0.0.1',
                        help='interface to listen on (default 127.0.0.1)')
    port = command_line(arguments.port, int, allow_zero=True)
    parser.add_argument('--port', type=port, default=0,
                        help='device port (default 0: pick a free one, printed as PORT <n>)')
    parser.add_argument('--control-port', type=port, default=None,
                        help='fault-control port (0: pick a free one, printed as CONTROL <n>); '
                             'no control channel if not given')
    parser.add_argument('--control-host', default=None,
                        help='interface of the control channel (default: --host); e.g. 127.0.0.1 '
                             'for a device on another loopback address')
    parser.add_argument('--log-level', default='info',
                        choices=['debug', 'info', 'warn', 'error'],
                        help='stderr log level (default info)')
    return parser


def make_simulator(device: str, host: str = '127.0.0.1', port: int = 0, **options):
    """Build (not start) the simulator for ``device`` (a key of `DEVICES`).

    ``options`` go to its class (``replay``: ``recording``, ``link``, ``recorded_timing``).

    Raises
    ------
    ValueError
        If ``device`` is not one of them.
    """
    if device not in DEVICES:
        raise ValueError(f'device must be one of {sorted(DEVICES)}, got {device!r}')
    return _simulator_class(device)(host=host, port=port, **options)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = LogLevel.levelWithName(args.log_level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(defaultLogLevel=level)])],
        redirectStandardIO=False)

    from twisted.internet import reactor

    from socs_tcp.sim.control import ControlChannel

    options = {}
    if args.device == 'replay':
        options = {'recording': args.recording, 'link': args.link,
                   'recorded_timing': args.recorded_timing}
    elif args.recording or args.link or args.recorded_timing:
        make_parser().error('a recording, --link and --recorded-timing are for replay only')
    try:
        simulator = make_simulator(args.device, args.host, args.port, **options)
    except (OSError, ValueError) as exc:
        make_parser().error(str(exc))
    failed = []

    def listening(port: int) -> None:
        lines = [f'PORT {port}']
        control_port = None
        if args.control_port is not None:
            control = ControlChannel(simulator, args.control_host or args.host,
                                     args.control_port)
            control_port = control.start()
            lines.append(f'CONTROL {control_port}')
        print('\n'.join(lines), flush=True)
        log.info('Simulated {device} on {host}:{port}{control}', device=args.device,
                 host=args.host, port=port,
                 control=f', control on {control_port}' if control_port else '')

    def cannot_listen(failure) -> None:
        # e.g. the port is taken: say so and exit non-zero
        failed.append(failure)
        print(f'socs-tcp simulate: cannot listen: {failure.getErrorMessage()}',
              file=sys.stderr, flush=True)
        reactor.stop()

    # reactor.run() installs SIGINT/SIGTERM handlers that stop the reactor,
    # which closes the listening ports and connections on the way out.
    reactor.callWhenRunning(
        lambda: simulator.start().addCallback(listening).addErrback(cannot_listen))
    reactor.run()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
