"""A private crossbar router for OCS, from the ``crossbar`` package on PyPI.

The configuration is OCS's own example (``ocs.ocsbow``) with the three edits a
local run needs: a ``auto_ping_size`` crossbar 26 accepts, a listening address
of 127.0.0.1 only, and a ``/info`` path to poll for readiness.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from twisted.logger import Logger

from socs_tcp import _arguments as arguments
from socs_tcp.testing._processes import ManagedProcess

log = Logger()

HOST = '127.0.0.1'


class CrossbarError(RuntimeError):
    """Crossbar could not be configured, started, or did not become ready."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port that was free on ``host`` a moment ago.

    The port is found by binding port 0 and closing; another program could
    take it before it is used, which callers report as a start failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def render_crossbar_config(realm: str, address_root: str, port: int) -> dict:
    """Return OCS's crossbar configuration, edited for a private local router.

    Parameters
    ----------
    realm : str
        WAMP realm (crossbar rejects very short names such as ``'r'``).
    address_root : str
        OCS address root (agents register ``<address_root>.<instance-id>``).
    port : int
        TCP port on 127.0.0.1 for the websocket (``/ws``) and HTTP (``/call``).

    Raises
    ------
    TypeError, ValueError
        If ``port`` is not an int in 1..65535.
    """
    port = arguments.port(port)
    from ocs.ocsbow import render_crossbar_config_example

    config = json.loads(render_crossbar_config_example(
        {'realm': realm, 'address_root': address_root, 'port': port}))
    transport = config['workers'][0]['transports'][0]
    transport['paths']['ws']['options']['auto_ping_size'] = 12  # crossbar 26: 12..125
    transport['endpoint']['interface'] = HOST
    transport['paths']['info'] = {'type': 'nodeinfo'}
    return config


class Crossbar:
    """A crossbar router process started by :class:`~socs_tcp.testing._stack.OcsStack`.

    Attributes
    ----------
    port : int
    realm, address_root : str
    wamp_server : str
        ``ws://127.0.0.1:<port>/ws``, what agents connect to.
    wamp_http : str
        ``http://127.0.0.1:<port>/call``, what ``OCSClient`` posts to.
    process : ManagedProcess
    """

    def __init__(self, executable: str, cbdir: Path, *, realm: str, address_root: str,
                 port: int, env: Mapping[str, str]) -> None:
        self.realm = realm
        self.address_root = address_root
        self.port = port
        self.cbdir = Path(cbdir)
        self.cbdir.mkdir(parents=True, exist_ok=True)
        (self.cbdir / 'config.json').write_text(
            json.dumps(render_crossbar_config(realm, address_root, port), indent=2))
        self.wamp_server = f'ws://{HOST}:{port}/ws'
        self.wamp_http = f'http://{HOST}:{port}/call'
        self.info_url = f'http://{HOST}:{port}/info'
        self.process = ManagedProcess(
            'crossbar', [executable, 'start', '--cbdir', str(self.cbdir)],
            log_path=self.cbdir.parent / 'logs' / 'crossbar.log', env=env, cwd=self.cbdir)
        self.ready = False

    def poll_ready(self) -> bool:
        """Return True once ``/info`` answers HTTP 200 (one short request)."""
        if self.ready:
            return True
        try:
            with urllib.request.urlopen(self.info_url, timeout=0.5) as reply:
                self.ready = reply.status == 200
        except (urllib.error.URLError, OSError):
            self.ready = False
        return self.ready

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once crossbar serves ``/info``.

        Raises
        ------
        CrossbarError
            If the process exits first (bad config, port taken) or ``timeout``
            seconds pass; the message holds the end of crossbar's log.
        """
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if not self.process.running:
                raise CrossbarError(
                    f'crossbar exited with status {self.process.returncode} before it was '
                    f'ready on port {self.port}; log {self.process.log_path}:\n'
                    f'{self.process.log_tail()}')
            if time.monotonic() > deadline:
                raise CrossbarError(
                    f'crossbar not ready on port {self.port} after {timeout} s; log '
                    f'{self.process.log_path}:\n{self.process.log_tail()}')
            time.sleep(0.1)
        log.info('crossbar ready on port {port} after {s:.1f} s', port=self.port,
                 s=time.monotonic() - self.process.started_at)


def find_executable(name: str, hint: str) -> str:
    """Return the path of console script ``name``: the one installed beside the
    running Python (the same venv) first, then ``PATH``.

    Raises
    ------
    FileNotFoundError
        Naming the program and ``hint`` (how to install it).
    """
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f'{name!r} not found beside {sys.executable} nor on PATH: {hint}')
