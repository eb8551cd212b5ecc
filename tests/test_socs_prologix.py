"""SOCS's Prologix and SCPI-PSU drivers, unchanged, on socs_tcp (``SOCS_TCP=prologix,scpi_psu``).

The drivers are SOCS's own (srs_cg635's ``SRSCG635Interface``, scpi_psu's
``PsuInterface`` and ``ScpiPsuInterface``, tektronix3021c's
``TektronixInterface``), run in worker threads as OCS runs them, against a
fake Prologix box on 127.0.0.1 (``socs_fake_bridge``) that behaves as a
bridge does: it hands an instrument's late reply to whichever connection is
open. Each test states what the agents need: a right value, or an exception
their ``except`` clause catches (scpi_psu and tektronix3021c: ``socket.timeout``
only), within the timeout. On plain socs (``SOCS_TCP_TESTS_PLAIN=1``, in
``unshare -n``) each of them fails.
"""

from __future__ import annotations

import socket
import time

import pytest
import pytest_twisted

from socs_fake_bridge import FakeBridge
from socs_tcp._socs._line import LinkDown
from socs_tcp.testing._crossbar import free_port
from socs_transport_fixtures import TIMEOUT, on_transports, prologix_bridge  # noqa: F401 (fixture)
from tests.conftest import in_worker

GPIB = 5
SETUP = [b'++mode 1', b'++auto 1', f'++addr {GPIB}'.encode()]
#: A failing call must end within the timeout plus this (SOCS's write pause, scheduling).
MARGIN = 0.6

CG635 = {
    b'FREQ?': b'122880000.0\n', b'STDC?': b'3\n', b'RUNS?': b'1\n', b'TIMB?': b'3\n',
    b'FREQ?;STDC?;RUNS?;TIMB?': b'122880000.0;3;1;3\n',
    b'*idn?': b'Stanford Research Systems,CG635,s/n001,ver1.0\n',
}
PSU = {b'CHAN:OUTP:STAT?': b'1\n', b'MEAS:VOLT? CH1': b'12.5\n', b'MEAS:CURR? CH1': b'0.25\n',
       b'*idn?': b'KEITHLEY INSTRUMENTS,MODEL 2230G-30-1,1,1\n'}
DIRECT_PSU = {b'*idn?': b'KEITHLEY INSTRUMENTS,MODEL 2280S-60-3,1,1\n', b'OUTP:STAT?': b'1\n',
              b'MEAS:VOLT?': b'0.25A,12.5V\n', b'MEAS:CURR?': b'0.25A,12.5V\n'}


@pytest.fixture
def clock_box(on_transports, monkeypatch):  # noqa: F811 (fixture)
    bridge = prologix_bridge(CG635.get, monkeypatch)
    yield bridge
    bridge.close()


@pytest.fixture
def psu_box(on_transports, monkeypatch):  # noqa: F811
    bridge = prologix_bridge(PSU.get, monkeypatch)
    yield bridge
    bridge.close()


def clock():
    from socs.agents.srs_cg635.drivers import SRSCG635Interface
    return SRSCG635Interface('127.0.0.1', GPIB)


def noticed_close(driver) -> bool:
    """Whether the driver's link saw the peer close (plain socs has no link to ask: at once)."""
    link = getattr(driver, '_link', None)
    return link is None or not link.interface.connected


def outcome(call):
    """``(value, None)`` or ``(None, exception)``: what the agent's call got."""
    try:
        return call(), None
    except Exception as exc:
        return None, exc


def assert_caught_by_socket_timeout(exc, started, why):
    assert exc is not None, f'{why}: the call returned instead of failing'
    assert isinstance(exc, socket.timeout), f'{why}: {exc!r} escapes the agents\' except socket.timeout'
    assert time.monotonic() - started < TIMEOUT + MARGIN, f'{why}: took past the timeout'


@pytest_twisted.inlineCallbacks
def test_drivers_stand_on_socs_tcp_and_read_whole_lines(clock_box):
    clock_box.split[b'FREQ?'] = 0.15   # the reply comes in two TCP segments

    def body():
        c = clock()
        return type(c).__mro__, c.get_freq(), c.get_all_status(), c.identify()
    mro, freq, status, idn = yield in_worker(body)
    assert any(cls.__module__ == 'socs_tcp._socs.prologix' for cls in mro)
    assert freq == 122880000.0          # SOCS's recv(128) returned the first piece: 1228.0
    assert status == (122880000.0, 3, 1, 3)
    assert idn.startswith('Stanford Research Systems,CG635')
    assert clock_box.requests_on(1)[:3] == SETUP


@pytest_twisted.inlineCallbacks
def test_a_late_reply_never_answers_a_later_query(clock_box):
    clock_box.late[b'STDC?'] = TIMEOUT + 0.2   # 0.1 s after the driver gave up

    def body():
        c = clock()
        started = time.monotonic()
        _, exc = outcome(c.get_stdc)
        assert_caught_by_socket_timeout(exc, started, 'STDC? unanswered in time')
        clock_box.late = {b'FREQ?': 0.3}           # and the next query is slow
        return c.get_freq(), c.get_runs(), c.get_stdc()
    freq, runs, stdc = yield in_worker(body)
    # SOCS: the late '3' answered FREQ? (and '122880000.0\n3' was seen glued)
    assert (freq, runs, stdc) == (122880000.0, 1, 3)


@pytest_twisted.inlineCallbacks
def test_a_driver_rebuilt_after_a_timeout_closes_the_old_connection_and_drops_the_late_reply(clock_box):
    clock_box.late[b'FREQ?;STDC?;RUNS?;TIMB?'] = TIMEOUT + 0.2

    def body():
        c = clock()
        started = time.monotonic()
        _, exc = outcome(c.get_all_status)
        assert_caught_by_socket_timeout(exc, started, 'status unanswered in time')
        clock_box.late.clear()
        # srs_cg635's acq: self.clock = None, then a new driver on its next loop
        fresh = clock()
        return fresh.get_freq(), fresh.get_all_status()
    freq, status = yield in_worker(body)
    assert freq == 122880000.0 and status == (122880000.0, 3, 1, 3)
    # the old connection was closed before the new one opened (bridges take one client)
    assert ('second client', 2) not in clock_box.events, clock_box.events
    assert clock_box.requests_on(2)[:3] == SETUP


@pytest_twisted.inlineCallbacks
def test_after_a_peer_close_the_next_query_reconnects_and_sends_the_setup_again(clock_box):
    def body():
        c = clock()
        first = c.get_freq()
        clock_box.drop_client()
        clock_box.wait_for(lambda: noticed_close(c))
        return first, c.get_freq(), c.get_stdc()
    first, freq, stdc = yield in_worker(body)
    # SOCS: BrokenPipeError on the write, or '' -> float('') ValueError: acq dies
    assert (first, freq, stdc) == (122880000.0, 122880000.0, 3)
    assert clock_box.requests_on(2)[:4] == [*SETUP, b'FREQ?']


@pytest_twisted.inlineCallbacks
def test_a_silent_instrument_fails_within_the_timeout_with_what_the_agents_catch(psu_box):
    def body():
        from socs.agents.scpi_psu.drivers import PsuInterface
        psu = PsuInterface('127.0.0.1', GPIB)
        ok = psu.get_volt(1)
        psu_box.silent = True
        started = time.monotonic()
        _, exc = outcome(lambda: psu.get_volt(1))
        assert_caught_by_socket_timeout(exc, started, 'silent supply')
        psu_box.silent = False
        return ok, psu.get_volt(1), psu.get_curr(1)
    ok, volt, curr = yield in_worker(body)
    assert (ok, volt, curr) == (12.5, 12.5, 0.25)


@pytest_twisted.inlineCallbacks
def test_an_outage_fails_fast_and_the_next_call_after_it_works(psu_box):
    def body():
        from socs.agents.scpi_psu.drivers import PsuInterface
        psu = PsuInterface('127.0.0.1', GPIB)
        psu_box.stop()
        started = time.monotonic()
        _, exc = outcome(lambda: psu.get_output(1))
        assert_caught_by_socket_timeout(exc, started, 'supply down')
        psu_box.start()
        return psu.get_output(1), psu.get_volt(1)
    output, volt = yield in_worker(body)
    assert output is True and volt == 12.5
    assert psu_box.requests_on(psu_box.connections)[:3] == SETUP


@pytest_twisted.inlineCallbacks
def test_a_box_that_is_down_at_construction_raises_what_the_agents_catch(on_transports, monkeypatch):  # noqa: F811
    from socs_tcp import compat
    monkeypatch.setenv(compat.REDIRECT_ENV, f'127.0.0.1:1234=127.0.0.1:{free_port()}')

    def body():
        from socs.agents.tektronix3021c.drivers import TektronixInterface
        started = time.monotonic()
        _, exc = outcome(lambda: TektronixInterface('127.0.0.1', GPIB))
        return exc, time.monotonic() - started
    exc, took = yield in_worker(body)
    # SOCS: ConnectionRefusedError, which tektronix3021c's and scpi_psu's init do not catch
    assert isinstance(exc, LinkDown) and isinstance(exc, socket.timeout) and isinstance(exc, OSError)
    assert took < TIMEOUT + MARGIN


@pytest_twisted.inlineCallbacks
def test_a_write_only_driver_survives_a_peer_close(on_transports, monkeypatch):  # noqa: F811
    bridge = prologix_bridge(lambda request: None, monkeypatch)
    try:
        def body():
            from socs.agents.tektronix3021c.drivers import TektronixInterface
            awg = TektronixInterface('127.0.0.1', GPIB)
            awg.set_freq(10.0)
            bridge.drop_client()
            bridge.wait_for(lambda: noticed_close(awg))
            awg.set_amp(0.5)    # SOCS: BrokenPipeError, which the set tasks do not catch
        yield in_worker(body)
        assert bridge.requests_on(2)[:4] == [*SETUP, b'SOUR:VOLT 0.500']
    finally:
        bridge.close()


@pytest_twisted.inlineCallbacks
def test_scpi_psu_direct_ethernet_reads_whole_lines_and_drops_late_replies(on_transports):  # noqa: F811
    supply = FakeBridge(DIRECT_PSU.get)
    supply.split[b'MEAS:VOLT?'] = 0.15
    try:
        def body():
            from socs.agents.scpi_psu.drivers import ScpiPsuInterface
            psu = ScpiPsuInterface('127.0.0.1', port=supply.port)
            model, volt = psu.model, psu.get_volt(1)
            # the reply comes 0.1 s after the driver gave up: while the next,
            # slower request waits for its own reply
            supply.late[b'MEAS:CURR?'] = TIMEOUT + 0.2
            started = time.monotonic()
            _, exc = outcome(lambda: psu.get_curr(1))
            assert_caught_by_socket_timeout(exc, started, 'current unanswered in time')
            supply.late = {b'OUTP:STAT?': 0.2}
            supply.split.clear()
            return model, volt, psu.get_output(1), psu.get_volt(1)
        model, volt, output, again = yield in_worker(body)
    finally:
        supply.close()
    assert model == '2280S-60-3' and volt == 12.5
    assert output is True and again == 12.5


@pytest_twisted.inlineCallbacks
def test_input_nobody_asked_for_is_dropped_before_each_request(on_transports, monkeypatch):  # noqa: F811
    # This supply echoes set commands: a line no driver reads
    def echoing(request: bytes) -> bytes | None:
        return request + b'\n' if request.startswith(b'volt') else PSU.get(request)
    bridge = prologix_bridge(echoing, monkeypatch)
    try:
        def body():
            from socs.agents.scpi_psu.drivers import PsuInterface
            psu = PsuInterface('127.0.0.1', GPIB)
            psu.set_volt(1, 12.5)
            return psu.get_volt(1)
        volt = yield in_worker(body)
    finally:
        bridge.close()
    assert volt == 12.5     # SOCS: float('volt 12.5\n12.5') raised ValueError


@pytest.fixture
def blackhole():
    """A port on 127.0.0.1 whose accept queue is full: the kernel drops new SYNs, connects hang."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):       # fill the queue (Linux takes backlog + 1), the next one hangs
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    yield listener.getsockname()[1]
    for sock in [*fillers, listener]:
        sock.close()


@pytest_twisted.inlineCallbacks
def test_connecting_is_bounded_by_the_timeout(on_transports, monkeypatch, blackhole):  # noqa: F811
    from socs_tcp import compat
    monkeypatch.setenv(compat.REDIRECT_ENV, f'127.0.0.1:1234=127.0.0.1:{blackhole}')

    def body():
        started = time.monotonic()
        _, exc = outcome(clock)
        return exc, time.monotonic() - started
    exc, took = yield in_worker(body)
    # SOCS connects before it sets any timeout: minutes of SYN retries
    assert isinstance(exc, socket.timeout) and took < TIMEOUT + MARGIN, (exc, took)


# -- SOCS's agents: their acq loops, as OCS runs them (a mocked OCSAgent, as SOCS's own tests) --

def run_acq(agent, process, params, bound: float = 8.0):
    """Call the agent's acq ``process`` (test_mode: it returns after one good reading), bounded."""
    import threading
    from unittest import mock

    from ocs.ocs_agent import OpSession
    watchdog = threading.Timer(bound, lambda: setattr(agent, 'monitor', False))
    watchdog.start()
    try:
        return process(OpSession(1, 'acq', app=mock.MagicMock()), params)
    finally:
        watchdog.cancel()


def mocked_ocs_agent():
    from unittest import mock

    import txaio
    txaio.use_twisted()
    agent = mock.MagicMock()
    agent.log = txaio.make_logger()
    return agent


def published(ocs_agent) -> list[dict]:
    return [c.args[1]['data'] for c in ocs_agent.publish_to_feed.call_args_list]


@pytest_twisted.inlineCallbacks
def test_srs_cg635_acq_rides_out_a_peer_close_and_a_late_reply_publishing_only_right_values(clock_box):
    from unittest import mock

    from ocs.ocs_agent import OpSession
    from socs.agents.srs_cg635.agent import SRSCG635Agent
    ocs_agent = mocked_ocs_agent()
    srs = SRSCG635Agent(ocs_agent, '127.0.0.1', GPIB)

    def body():
        assert srs.init(OpSession(1, 'init', app=mock.MagicMock()), {'auto_acquire': False})[0]
        done = [run_acq(srs, srs.acq, {'wait': 0, 'test_mode': True})]
        clock_box.drop_client()
        clock_box.wait_for(lambda: noticed_close(srs.clock))
        done.append(run_acq(srs, srs.acq, {'wait': 0, 'test_mode': True}))
        clock_box.late_once[b'FREQ?;STDC?;RUNS?;TIMB?'] = TIMEOUT + 0.2
        done.append(run_acq(srs, srs.acq, {'wait': 0, 'test_mode': True}))
        return done
    done = yield in_worker(body)
    # SOCS: after the peer close '' -> ValueError -> clear() -> BrokenPipeError: acq crashed
    assert done == [(True, 'Finished monitoring clock')] * 3
    values = published(ocs_agent)
    assert len(values) == 3 and all(v == {'Frequency': 122880000.0, 'Standard_CMOS_Output': 3,
                                          'Running_State': 1, 'Timebase': 3} for v in values), values


@pytest_twisted.inlineCallbacks
def test_scpi_psu_monitor_rides_out_a_peer_close_and_a_late_reply_publishing_only_right_values(psu_box):
    from unittest import mock

    from ocs.ocs_agent import OpSession
    from socs.agents.scpi_psu.agent import ScpiPsuAgent
    ocs_agent = mocked_ocs_agent()
    psu = ScpiPsuAgent(ocs_agent, '127.0.0.1', gpib_slot=GPIB)
    params = {'wait': 0, 'channels': [1], 'test_mode': True}

    def body():
        assert psu.init(OpSession(1, 'init', app=mock.MagicMock()), {'auto_acquire': False})[0]
        done = [run_acq(psu, psu.monitor_output, params)]
        psu_box.drop_client()
        psu_box.wait_for(lambda: noticed_close(psu.psu))
        done.append(run_acq(psu, psu.monitor_output, params))
        psu_box.late_once[b'MEAS:VOLT? CH1'] = TIMEOUT + 0.2
        done.append(run_acq(psu, psu.monitor_output, params))
        return done
    done = yield in_worker(body)
    assert done == [(True, 'Finished monitoring current')] * 3
    values = published(ocs_agent)
    assert len(values) == 3 and all(v == {'Voltage_1': 12.5, 'Current_1': 0.25} for v in values), values


@pytest_twisted.inlineCallbacks
def test_line_noise_is_a_failure_the_agents_catch_not_a_crash(clock_box):
    clock_box.respond = lambda request: b'\xff\xfe\x80\n' if request == b'RUNS?' else CG635.get(request)

    def body():
        c = clock()
        _, exc = outcome(c.get_runs)
        return exc, c.get_freq()
    exc, freq = yield in_worker(body)
    # SOCS: UnicodeDecodeError, a ValueError that no Prologix agent catches
    assert isinstance(exc, socket.timeout) and 'not text' in str(exc)
    assert freq == 122880000.0


@pytest_twisted.inlineCallbacks
def test_a_line_that_never_goes_quiet_after_an_unanswered_request_fails_within_the_bound(on_transports):  # noqa: F811
    supply = FakeBridge(DIRECT_PSU.get)
    try:
        def body():
            from socs.agents.scpi_psu.drivers import ScpiPsuInterface
            psu = ScpiPsuInterface('127.0.0.1', port=supply.port)
            supply.silent = True
            _, timed_out = outcome(lambda: psu.get_volt(1))
            supply.silent = False
            noise = supply.chatter(TIMEOUT * 3)
            started = time.monotonic()
            _, noisy = outcome(lambda: psu.get_volt(1))
            took = time.monotonic() - started
            noise.join(TIMEOUT * 4)
            return timed_out, noisy, took, psu.get_volt(1)
        timed_out, noisy, took, volt = yield in_worker(body)
    finally:
        supply.close()
    assert isinstance(timed_out, socket.timeout)
    # the next request is not sent into the noise: it fails as the agents expect, bounded
    assert isinstance(noisy, socket.timeout) and 'did not stay quiet' in str(noisy), noisy
    assert took < TIMEOUT + MARGIN
    assert volt == 12.5


def unterminated(replies: dict[bytes, bytes]):
    """Replies without their ``\\n``, as an instrument that ends them with EOI only (or SOCS's emulator)."""
    return lambda request: None if request not in replies else replies[request].rstrip(b'\n')


@pytest_twisted.inlineCallbacks
def test_a_reply_without_a_terminator_is_returned_whole_once_the_line_is_quiet(on_transports, monkeypatch):  # noqa: F811
    bridge = prologix_bridge(unterminated(CG635), monkeypatch)
    # in two pieces 0.1 s apart: bytes still coming, the reply is not over
    bridge.split[b'FREQ?'] = 0.1
    try:
        def body():
            c = clock()
            return c.identify(), c.get_freq(), c.get_all_status()
        idn, freq, status = yield in_worker(body)
    finally:
        bridge.close()
    # before: each read waited for a '\n' that never came, and timed out
    assert idn == 'Stanford Research Systems,CG635,s/n001,ver1.0'
    assert freq == 122880000.0          # not its first piece, 1228.0
    assert status == (122880000.0, 3, 1, 3)


@pytest_twisted.inlineCallbacks
def test_a_late_reply_without_a_terminator_never_answers_a_later_query(on_transports, monkeypatch):  # noqa: F811
    bridge = prologix_bridge(unterminated(CG635), monkeypatch)
    bridge.late[b'STDC?'] = TIMEOUT + 0.2   # 0.2 s after the driver gave up
    try:
        def body():
            c = clock()
            started = time.monotonic()
            _, exc = outcome(c.get_stdc)
            assert_caught_by_socket_timeout(exc, started, 'STDC? unanswered in time')
            bridge.late = {b'FREQ?': 0.3}       # and the next query is slow
            return c.get_freq(), c.get_runs()
        freq, runs = yield in_worker(body)
    finally:
        bridge.close()
    assert (freq, runs) == (122880000.0, 1)


@pytest_twisted.inlineCallbacks
def test_bytes_that_keep_coming_without_an_end_are_never_returned_in_part(on_transports):  # noqa: F811
    supply = FakeBridge(unterminated(DIRECT_PSU))
    try:
        def body():
            from socs.agents.scpi_psu.drivers import ScpiPsuInterface
            psu = ScpiPsuInterface('127.0.0.1', port=supply.port)
            supply.silent = True
            psu.write('MEAS:VOLT?')
            noise = supply.chatter(TIMEOUT * 2)   # a byte every 0.05 s: never quiet for reply_quiet
            started = time.monotonic()
            _, exc = outcome(psu.read)
            took = time.monotonic() - started
            noise.join(TIMEOUT * 4)
            supply.silent = False
            return exc, took, psu.get_volt(1)
        exc, took, volt = yield in_worker(body)
    finally:
        supply.close()
    assert isinstance(exc, socket.timeout) and 'no end of the reply' in str(exc), exc
    assert took < TIMEOUT + MARGIN
    assert volt == 12.5     # on a new connection, after the noise was drained


@pytest_twisted.inlineCallbacks
def test_after_an_unanswered_query_the_next_goes_out_on_the_same_connection(on_transports, monkeypatch):  # noqa: F811
    # As SOCS's device emulator: no reply to a command it does not know, and
    # one connection only (scpi_psu's monitor_output after its init timed out)
    bridge = prologix_bridge(unterminated(PSU), monkeypatch)
    bridge.late[b'MEAS:CURR? CH1'] = TIMEOUT + 0.1   # and a late reply, drained
    try:
        def body():
            from socs.agents.scpi_psu.drivers import PsuInterface
            psu = PsuInterface('127.0.0.1', GPIB)
            psu.write('SYST:ERR?')                     # unknown: no reply
            _, unknown = outcome(psu.read)
            _, late = outcome(lambda: psu.get_curr(1))
            volt = psu.get_volt(1)
            bridge.late.clear()
            return unknown, late, volt, psu.get_curr(1)
        unknown, late, volt, curr = yield in_worker(body)
    finally:
        bridge.close()
    assert isinstance(unknown, socket.timeout) and isinstance(late, socket.timeout), (unknown, late)
    assert (volt, curr) == (12.5, 0.25)
    # before: each timeout sent the next request on a new connection
    assert bridge.requests_on(2) == [], bridge.events
