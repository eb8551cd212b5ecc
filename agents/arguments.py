"""The SOCS-style command-line arguments both sample agents take."""

from __future__ import annotations

from socs_tcp._arguments import command_line, port, seconds


def add_device_arguments(group, default_port: int) -> None:
    """Add ``--ip-address``, ``--port``, ``--timeout``, ``--sample-interval``, ``--mode``."""
    group.add_argument('--ip-address', required=True,
                       help='IP address of the device.')
    group.add_argument('--port', type=command_line(port, int), default=default_port,
                       help=f'TCP port of the device (default {default_port}).')
    group.add_argument('--timeout', type=command_line(seconds), default=5.0,
                       help='Seconds one device exchange may take (default 5).')
    group.add_argument('--sample-interval', type=command_line(seconds), default=1.0,
                       help='Seconds between two samples of acq (default 1).')
    group.add_argument('--mode', default=None,
                       help="'acq' starts the acq process at startup; anything else "
                            "(or nothing) leaves the agent idle.")
