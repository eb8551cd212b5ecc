"""The SOCS-style command-line arguments both sample agents take."""

from __future__ import annotations

import argparse
import math


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number of seconds, got {text!r}')
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0 seconds, got {text!r}')
    return value


def _tcp_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a TCP port number, got {text!r}')
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f'must be in 1..65535, got {text!r}')
    return value


def add_device_arguments(group, default_port: int) -> None:
    """Add ``--ip-address``, ``--port``, ``--timeout``, ``--sample-interval``, ``--mode``."""
    group.add_argument('--ip-address', required=True,
                       help='IP address of the device.')
    group.add_argument('--port', type=_tcp_port, default=default_port,
                       help=f'TCP port of the device (default {default_port}).')
    group.add_argument('--timeout', type=_positive_seconds, default=5.0,
                       help='Seconds one device exchange may take (default 5).')
    group.add_argument('--sample-interval', type=_positive_seconds, default=1.0,
                       help='Seconds between two samples of acq (default 1).')
    group.add_argument('--mode', default=None,
                       help="'acq' starts the acq process at startup; anything else "
                            "(or nothing) leaves the agent idle.")
