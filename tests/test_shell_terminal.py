"""socs-tcp shell in a real terminal (tmux): keys typed, the screen read, the device taken away and back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from socs_tcp import _record as record
from tests._tools_support import simulator, wait_until

pytestmark = pytest.mark.skipif(shutil.which('tmux') is None,
                                reason='tmux is not installed (apt-get install tmux)')


class Terminal:
    """One tmux session on a private server socket; stopped (kill-server) at the end."""

    def __init__(self, socket_path: str, command: list[str], env: dict) -> None:
        self.base = ['tmux', '-S', socket_path]
        env_args = [f'{k}={v}' for k, v in env.items()]
        subprocess.run([*self.base, 'new-session', '-d', '-s', 'shell', '-x', '160', '-y', '50',
                        'env', *env_args, *command], check=True, timeout=10)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, 'send-keys', '-t', 'shell', *keys], check=True, timeout=10)

    def type(self, line: str) -> None:
        self.keys('-l', line)
        self.keys('Enter')

    def screen(self) -> str:
        out = subprocess.run([*self.base, 'capture-pane', '-p', '-J', '-t', 'shell', '-S', '-500'],
                             capture_output=True, text=True, timeout=10)
        return out.stdout

    def wait(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        return wait_until(lambda: (s := self.screen()).count(text) >= count and s, timeout,
                          f'{text!r} (x{count}) on the screen:\n{self.screen()}')

    def alive(self) -> bool:
        return subprocess.run([*self.base, 'has-session', '-t', 'shell'],
                              capture_output=True, timeout=10).returncode == 0

    def close(self) -> None:
        subprocess.run([*self.base, 'kill-server'], capture_output=True, timeout=10)


@pytest.fixture
def terminal(tmp_path):
    made = []

    def start(*argv: str) -> Terminal:
        env = {'PATH': os.environ.get('PATH', ''), 'HOME': str(tmp_path), 'TERM': 'xterm',
               'PYTHONPATH': os.environ.get('PYTHONPATH', '')}
        made.append(Terminal(str(tmp_path / 'tmux.sock'),
                             [sys.executable, '-m', 'socs_tcp.cli', 'shell', *argv], env))
        return made[-1]

    yield start
    for term in made:
        term.close()


def test_the_shell_in_a_terminal_with_a_device_that_goes_away_and_comes_back(terminal, tmp_path):
    assert record.RECORD_ENV not in os.environ
    history = tmp_path / 'history'
    transcript = tmp_path / 'transcript.txt'
    with simulator('psu') as psu:
        term = terminal(f'127.0.0.1:{psu.port}', '--history', str(history),
                        '--transcript', str(transcript), '--timeout', '1')
        prompt = f'127.0.0.1:{psu.port}> '
        term.wait(f'[connected to 127.0.0.1:{psu.port}]')
        term.wait(prompt)

        term.type('*IDN?')
        term.wait('SOCS-TCP,SIM-PSU-3005')
        term.type('write VOLT 2.5')
        term.wait('(sent 9 bytes)')
        # Line editing: a typo rubbed out with Backspace, the cursor moved with Home.
        term.keys('-l', 'OLX')
        term.keys('BSpace')
        term.keys('-l', 'T?')
        term.keys('Home')
        term.keys('-l', 'V')
        term.keys('Enter')
        term.wait('+2.500000E+00  [')
        # History: Up brings the last line back.
        term.keys('Up')
        term.keys('Enter')
        term.wait('+2.500000E+00  [', count=2)

        # The device goes away while the shell waits at its prompt: it says so at once.
        psu.control.send('stop')
        term.wait('lost (')
        term.wait('reconnecting in the background')
        term.type('VOLT?')
        term.wait('error: cannot connect')
        # ... and comes back: the library reconnects in the background, the shell says so.
        psu.control.send('start')
        term.wait(f'[connected to 127.0.0.1:{psu.port}]', count=2, timeout=15)
        term.type('VOLT?')
        term.wait('+2.500000E+00  [', count=3)

        # Ctrl-D leaves; history and transcript are kept.
        term.keys('C-d')
        wait_until(lambda: not term.alive(), 10, 'the shell to exit on Ctrl-D')
    assert 'VOLT?' in history.read_text().splitlines()
    text = transcript.read_text()
    assert "> b'VOLT?'" in text and 'connection lost' in text and "< b'+2.500000E+00'" in text
