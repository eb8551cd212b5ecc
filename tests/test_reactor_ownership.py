"""Who runs the reactor: a plain script (background thread) or an OCS agent (main thread).

Each case runs as its own Python process, talking over loopback to a device
served by this test process's reactor.
"""

import socket
import subprocess
import sys
import textwrap
import time

import pytest_twisted

from tests.conftest import in_worker


def run_script(source: str, *args, timeout: float = 20):
    """Run ``source`` in a fresh interpreter; return (returncode, stdout, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(source), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


PLAIN_SCRIPT = """
    import sys, threading
    from socs_tcp import TCPInterface

    class Device(TCPInterface):
        def __init__(self, ip_address, port=501, timeout=10, *args, **kwargs):
            super().__init__(ip_address, port, timeout)

        def get_data(self):
            self.send(b'get_data\\n')
            return self.recv()

    print(Device('127.0.0.1', int(sys.argv[1]), 2).get_data())
    print('threads', sorted(t.name for t in threading.enumerate()))
    # no close(): the script must still exit promptly
"""


@pytest_twisted.inlineCallbacks
def test_a_plain_script_just_works_and_exits_cleanly(line_device):
    rc, out, err, took = yield in_worker(run_script, PLAIN_SCRIPT, line_device.port)
    assert rc == 0, err
    assert "b'get_data\\n'" in out
    assert 'socs_tcp-reactor' in out  # a background reactor thread served it
    assert took < 10


REACTOR_STOPS = """
    import sys, threading, time
    from twisted.internet import reactor
    from socs_tcp import TCPInterface

    dev = TCPInterface('127.0.0.1', int(sys.argv[1]), 5, read_termination=b'\\n')
    result = {}
    def call():
        start = time.monotonic()
        try:
            dev.query(b'silent\\n')
        except ConnectionError as exc:
            result['error'] = type(exc).__name__
        result['took'] = time.monotonic() - start
    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.3)  # the query is waiting for a reply that never comes
    reactor.callFromThread(reactor.stop)
    worker.join(10)
    print(result['error'], round(result['took'], 3))
    start = time.monotonic()
    try:
        dev.query(b'after\\n')
    except ConnectionError as exc:
        print('after-stop', type(exc).__name__, round(time.monotonic() - start, 3))
"""


@pytest_twisted.inlineCallbacks
def test_calls_end_promptly_when_the_reactor_stops(line_device):
    line_device.set_silent(True)
    rc, out, err, _ = yield in_worker(run_script, REACTOR_STOPS, line_device.port)
    assert rc == 0, err
    first, second = out.strip().splitlines()
    name, took = first.split()
    assert name in ('NotConnected', 'DeviceDisconnected') and float(took) < 1.0  # not the 5 s timeout
    label, name, took = second.split()
    assert name == 'NotConnected' and float(took) < 0.1


OCS_AGENT = """
    import sys, time
    import ocs.ocs_agent  # an OCS agent: its runner will run the reactor in this thread
    from twisted.internet import reactor, threads
    from socs_tcp import ReactorThreadError, TCPInterface

    class Agent:
        def __init__(self):  # a SOCS driver talking to its device in the agent's __init__
            self.dev = TCPInterface('127.0.0.1', int(sys.argv[1]), 2, read_termination=b'\\n',
                                    write_termination=b'\\n')
            print('built before the reactor runs; comm is', type(self.dev.comm).__name__)
            print('__init__ I/O:', self.dev.query('*IDN?'))
            start = time.monotonic()
            down = TCPInterface('127.0.0.1', int(sys.argv[2]), 1)
            try:
                down.send(b'x')
            except ConnectionError as exc:
                print('device down:', type(exc).__name__, 'bounded', time.monotonic() - start < 1.5)

        def acq(self):  # what OCS runs in a worker thread
            got = self.dev.stats['connects'], self.dev.query('from a worker')
            # The connection was made before the reactor ran: now that it runs, the
            # usual query takes the bridge's own path.
            print('ready for the usual query:', self.dev._link._ready != 0)
            return got

        def in_reactor(self):
            try:
                self.dev.query('too late')
            except ReactorThreadError as exc:
                print('blocking in the running reactor thread refused:', 'reactor thread' in str(exc))

    agent = Agent()
    def done(result):
        print('worker got', result)
        reactor.stop()
    def failed(f):
        print('worker failed', f.getErrorMessage())
        reactor.stop()
    reactor.callWhenRunning(agent.in_reactor)
    reactor.callWhenRunning(lambda: threads.deferToThread(agent.acq).addCallbacks(done, failed))
    reactor.run()
"""


@pytest_twisted.inlineCallbacks
def test_device_io_before_the_agents_reactor_runs_works_and_the_link_then_belongs_to_it(line_device):
    with socket.socket() as s:  # a port with nothing listening: the device that is down
        s.bind(('127.0.0.1', 0))
        down_port = s.getsockname()[1]
    rc, out, err, _ = yield in_worker(run_script, OCS_AGENT, line_device.port, down_port)
    assert rc == 0, err
    assert 'comm is CommSocket' in out
    assert "__init__ I/O: b'*IDN?'" in out
    assert 'device down: NotConnected bounded True' in out
    assert 'blocking in the running reactor thread refused: True' in out
    assert "worker got (1, b'from a worker')" in out  # the same connection, now the reactor's
    assert 'ready for the usual query: True' in out


DECLARED_BACKGROUND = """
    import sys, threading
    import ocs.ocs_agent  # would mean 'the application runs the reactor' if undeclared
    import socs_tcp
    socs_tcp.set_reactor_owner('background')
    dev = socs_tcp.TCPInterface('127.0.0.1', int(sys.argv[1]), 2, read_termination=b'\\n')
    print(dev.query(b'declared\\n'), 'socs_tcp-reactor' in [t.name for t in threading.enumerate()])
    try:
        socs_tcp.set_reactor_owner('nobody')
    except ValueError as exc:
        print('refused:', exc)
"""


@pytest_twisted.inlineCallbacks
def test_the_declared_reactor_owner_wins_over_the_guess(line_device):
    rc, out, err, _ = yield in_worker(run_script, DECLARED_BACKGROUND, line_device.port)
    assert rc == 0, err
    assert "b'declared' True" in out
    assert "refused: owner must be 'application' or 'background', got 'nobody'" in out


BY_NAME_BEFORE_RUN = """
    import sys, time
    import socs_tcp
    socs_tcp.set_reactor_owner('application')    # an agent: nobody runs the reactor yet
    start = time.monotonic()
    dev = socs_tcp.TCPInterface('localhost', int(sys.argv[1]), 2, read_termination=b'\\n')
    print('connected', dev.connected, 'quickly', time.monotonic() - start < 1.5)
    print(dev.query(b'by name\\n'))
"""


@pytest_twisted.inlineCallbacks
def test_a_device_named_by_host_name_connects_before_the_reactor_runs(line_device):
    # Twisted looks names up in the reactor's thread pool, which starts only with the reactor.
    rc, out, err, _ = yield in_worker(run_script, BY_NAME_BEFORE_RUN, line_device.port)
    assert rc == 0, err
    assert 'connected True quickly True' in out, out
    assert "b'by name'" in out
