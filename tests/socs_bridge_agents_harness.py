"""SOCS's agents that reach their device through a bridge, on a real OCS stack, under faults.

The agents (pip package ``socs``, unchanged, launched by ``ocs-agent-cli`` as
a site launches them): ``ScpiPsuAgent`` through a Prologix box,
``PfeifferTC400Agent`` through pyserial ``socket://``,
``WiregridTiltSensorAgent`` (DWL) through a Moxa serial server and
``HWPPIDAgent``, each against its simulator of `socs_tcp.sim.devices`. Run
with ``SOCS_TCP=1`` in the agent's environment (every transport on
socs_tcp) or without it (plain socs), the same faults are played on each
(`SCENARIOS`) and what the agent did is recorded as an `Outcome`: whether
the process and its acquisition survived, every reading it published during
the fault (checked against what the simulator can produce: a stale or
misplaced reply shows up as an invalid reading), and when valid readings
resumed.

Readings are taken from the acquisition session's ``data`` (polled every
0.1 s; each agent publishes about once a second). Everything listens on
127.0.0.1; the Prologix driver's fixed port 1234 is reached through
``SOCS_TCP_REDIRECT`` with socs_tcp, and by a simulator on 127.0.0.1:1234
itself (when free) with plain socs.
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from socs_tcp.sim.devices import moxa

BIN = Path(sys.executable).parent
JOIN_TIMEOUT = 45.0
FIRST_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 20.0
DOWN_HOLD = 3.0
POLL = 0.1


def _close(a, b, tol=1e-6) -> bool:
    return isinstance(a, (int, float)) and math.isfinite(a) and abs(a - b) <= tol


# -- what each agent publishes, and what is valid -------------------------------------

PSU_SET = {1: (5.0, 1.0), 2: (12.0, 2.0), 3: (20.0, 3.0)}     # channel: (volts, amps limit)
PSU_LOAD = 10.0


def psu_reading(session: dict):
    data = session.get('data') or {}
    return data.get('timestamp'), data.get('data') or {}


def check_psu(values: dict) -> str | None:
    for ch, (volts, _amps) in PSU_SET.items():
        v, a = values.get(f'Voltage_{ch}'), values.get(f'Current_{ch}')
        if not (_close(v, volts) and _close(a, volts / PSU_LOAD)):
            return f'channel {ch}: {v!r} V {a!r} A, set {volts} V into {PSU_LOAD} ohm'
    return None


def setup_psu(client) -> None:
    client.init()
    for ch, (volts, amps) in PSU_SET.items():
        client.set_voltage(channel=ch, volts=volts)
        client.set_current(channel=ch, current=amps)
        client.set_output(channel=ch, state=True)
    client.monitor_output.start()


TC400_FIXED = {'Drive_Voltage': 24.0, 'Drive_Current': 0.3, 'Drive_Power': 10.0,
               'Turbo_Power_Stage_Temp': 32, 'Turbo_Electronics_Temp': 35,
               'Turbo_Pump_Bottom_Temp': 28, 'Turbo_Bearing_Temp': 30, 'Turbo_Motor_Temp': 30,
               'Rotation_Speed': 0, 'Acceleration': 0, 'Error_Code': 'no Err'}


def tc400_reading(session: dict):
    data = session.get('data') or {}
    return data.get('timestamp'), data.get('data') or {}


def check_tc400(values: dict) -> str | None:
    # The pump is off: every parameter has one value, different from the others'.
    for name, expected in TC400_FIXED.items():
        got = values.get(name)
        if got != expected and not (isinstance(expected, float) and _close(got, expected, 1e-9)):
            return f'{name}={got!r}, the controller holds {expected!r}'
    return None


TILT = moxa.DWL()


def tilt_reading(session: dict):
    data = session.get('data') or {}
    return data.get('timestamp'), data.get('tiltsensor_data') or {}


def check_tilt(values: dict) -> str | None:
    x, y = values.get('angleX'), values.get('angleY')
    if not (_close(x, TILT.x, 1e-9) and _close(y, TILT.y, 1e-9)):
        return f'angles ({x!r}, {y!r}), the sensor sits at ({TILT.x}, {TILT.y})'
    return None


PID_TARGET = 2.0


def pid_reading(session: dict):
    # Unhealthy (a getter failed): the agent says so (degraded) and its session
    # keeps the last values it read; that is not a new reading.
    data = session.get('data') or {}
    if not data.get('healthy'):
        return None, {}
    return data.get('last_updated'), data


def check_pid(values: dict) -> str | None:
    freq, target, direction = (values.get(k) for k in ('current_freq', 'target_freq', 'direction'))
    if not (_close(target, PID_TARGET) and direction == 0
            and isinstance(freq, (int, float)) and -1e-6 <= freq <= PID_TARGET + 1e-6):
        return f'freq={freq!r} target={target!r} direction={direction!r}, set {PID_TARGET} Hz forward'
    return None


def setup_pid(client) -> None:
    client.declare_freq(freq=PID_TARGET)
    client.tune_freq()


@dataclass(frozen=True)
class BridgeAgent:
    """One SOCS agent under test and its simulated device."""

    key: str
    agent_class: str
    sim_kind: str
    transport: str                              # the SOCS_TCP transport it runs on
    process: str                                # its acquisition process
    arguments: Callable[[str, int], list]
    reading: Callable[[dict], tuple]            # session -> (timestamp, values)
    check: Callable[[dict], str | None]         # values -> why invalid, or None
    late: float                                 # seconds: longer than the driver's timeout
    setup: Callable | None = None               # client -> None, once it joined
    fixed_port: int | None = None


AGENTS = {
    'scpi_psu': BridgeAgent(
        'scpi_psu', 'ScpiPsuAgent', 'prologix', 'prologix', 'monitor_output',
        lambda host, port: ['--ip-address', host, '--gpib-slot', '5', '--mode', 'init'],
        psu_reading, check_psu, late=6.0, setup=setup_psu, fixed_port=1234),
    'pfeiffer_tc400': BridgeAgent(
        'pfeiffer_tc400', 'PfeifferTC400Agent', 'pfeiffer-tc400', 'pyserial', 'acq',
        lambda host, port: ['--ip-address', host, '--port-number', str(port),
                            '--turbo-address', '1', '--mode', 'acq'],
        tc400_reading, check_tc400, late=4.0),
    'wiregrid_tiltsensor': BridgeAgent(
        'wiregrid_tiltsensor', 'WiregridTiltSensorAgent', 'moxa-dwl', 'moxa', 'acq',
        lambda host, port: ['--ip-address', host, '--port', str(port), '--sensor-type', 'DWL'],
        tilt_reading, check_tilt, late=3.0),
    'hwp_pid': BridgeAgent(
        'hwp_pid', 'HWPPIDAgent', 'hwp-pid', 'hwp_pid', 'main',
        lambda host, port: ['--ip', host, '--port', str(port)],
        pid_reading, check_pid, late=4.0, setup=setup_pid),
}

SCENARIOS = ('hangup', 'down', 'late')


@dataclass
class Outcome:
    """What one agent did in one scenario."""

    agent: str
    scenario: str
    mode: str
    readings: list = field(default_factory=list)     # (timestamp, values) during the scenario
    invalid: list = field(default_factory=list)      # (timestamp, why)
    recovered_after: float | None = None
    steady: bool = False                             # the reading after that one valid too
    process_alive: bool = False
    acq_status: str | None = None
    acq_messages: list = field(default_factory=list)
    error: str | None = None
    cpu_seconds: float | None = None                 # agent CPU time during the scenario

    @property
    def acq_running(self) -> bool:
        return self.acq_status == 'running'

    def why_ended(self) -> str:
        """The session's last message that says why it ended (a crash's exception line)."""
        for message in reversed(self.acq_messages):
            if 'CRASH' in message or 'Traceback' in message:
                lines = [line.strip() for line in message.splitlines() if line.strip()]
                error = next((line for line in lines if "<class '" in line), lines[0])
                return error.replace('[Failure instance: Traceback: ', '')[:110]
        informative = [m for m in self.acq_messages if not m.startswith('Status is now')]
        return (informative[-1] if informative else 'no reason given')[:110]

    def verdict(self) -> str:
        """One cell of the characterization table."""
        if self.error:
            return f'harness error: {self.error.splitlines()[0]}'
        if not self.process_alive:
            return 'agent process died'
        parts = []
        if not self.acq_running:
            parts.append(f'acq ended ({self.acq_status}): {self.why_ended()}')
        if self.invalid:
            parts.append(f'{len(self.invalid)} wrong reading(s) published: {self.invalid[0][1]}')
        if self.recovered_after is None:
            parts.append('no valid reading after the fault')
        else:
            parts.append(f'valid again after {self.recovered_after:.1f} s')
        if self.cpu_seconds is not None:
            parts.append(f'agent CPU {self.cpu_seconds:.1f} s')
        return '; '.join(parts)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def _cpu_seconds(pid: int) -> float | None:
    try:
        import psutil
        proc = psutil.Process(pid)
        times = [proc.cpu_times()] + [c.cpu_times() for c in proc.children(recursive=True)]
        return sum(t.user + t.system for t in times)
    except Exception:
        return None


class AgentRun:
    """One SOCS agent and its simulator on a stack, with SOCS_TCP=1 (``mode='socs_tcp'``) or not."""

    _runs = 0          # instance ids are unique in a stack's site config

    def __init__(self, stack, kind: BridgeAgent, mode: str) -> None:
        if mode not in ('socs_tcp', 'socs'):
            raise ValueError(f"mode must be 'socs_tcp' or 'socs', got {mode!r}")
        self.stack, self.kind, self.mode = stack, kind, mode
        AgentRun._runs += 1
        self.instance_id = (f'{kind.key.replace("_", "-")}-{mode.replace("_", "-")}'
                            f'-{AgentRun._runs}')
        self.sim = self.service = self.client = None

    def start(self) -> None:
        kind, stack = self.kind, self.stack
        args, env = [], {}
        if kind.fixed_port and self.mode == 'socs':
            if not port_is_free(kind.fixed_port):
                raise RuntimeError(f'{kind.agent_class} on plain socs needs 127.0.0.1:'
                                   f'{kind.fixed_port} for its simulator, and it is taken')
            args = ['--port', str(kind.fixed_port)]
        self.sim = stack.start_simulator(kind.sim_kind, f'{kind.sim_kind}-{self.instance_id}',
                                         args=args)
        port = self.sim.port
        if self.mode == 'socs_tcp':
            env['SOCS_TCP'] = '1'
            if kind.fixed_port:
                env['SOCS_TCP_REDIRECT'] = f'127.0.0.1:{kind.fixed_port}=127.0.0.1:{port}'
                port = kind.fixed_port
        stack.add_agent(self.instance_id, kind.agent_class, kind.arguments('127.0.0.1', port))
        stack.crossbar.wait_ready()
        stack.write_site_config()
        self.service = stack.start_service(
            f'agent-{self.instance_id}',
            [str(BIN / 'ocs-agent-cli'), '--instance-id', self.instance_id, '--site-host',
             'localhost'], expect=(), wait=False, env=env or None)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while self.client is None:
            if not self.service.process.running or time.monotonic() > deadline:
                raise RuntimeError(f'{self.instance_id} did not join:\n'
                                   f'{self.service.process.log_tail(30)}')
            try:
                self.client = stack.client(self.instance_id)
            except Exception:
                time.sleep(0.2)
        if kind.setup is not None:
            kind.setup(self.client)
        if self.fresh_valid(time.time() - 1, FIRST_TIMEOUT) is None:
            raise RuntimeError(f'{self.instance_id}: no valid reading within {FIRST_TIMEOUT} s; '
                               f'{self.session()}\n{self.service.process.log_tail(30)}')

    @property
    def log(self) -> str:
        return self.service.process.read_log()

    def session(self) -> dict:
        try:
            return getattr(self.client, self.kind.process).status().session
        except Exception:
            return {}

    def fresh_valid(self, after: float, timeout: float, seen: list | None = None) -> float | None:
        """Poll until a valid reading stamped after ``after``; its timestamp, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            session = self.session()
            stamp, values = self.kind.reading(session)
            if stamp and stamp > after:
                if seen is not None and (not seen or seen[-1][0] != stamp):
                    seen.append((stamp, dict(values)))
                if self.kind.check(values) is None:
                    return stamp
            if session.get('status') not in (None, 'starting', 'running'):
                return None
            time.sleep(POLL)
        return None

    def watch(self, seconds: float, seen: list) -> None:
        """Record every reading published for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stamp, values = self.kind.reading(self.session())
            if stamp and (not seen or seen[-1][0] != stamp):
                seen.append((stamp, dict(values)))
            time.sleep(POLL)

    def play(self, scenario: str) -> Outcome:
        outcome = Outcome(self.kind.key, scenario, self.mode)
        pid = self.service.process.pid
        cpu0 = _cpu_seconds(pid)
        seen: list = []
        try:
            if self.session().get('status') not in ('starting', 'running'):
                getattr(self.client, self.kind.process).start()     # as an operator would
                self.fresh_valid(time.time(), RECOVERY_TIMEOUT)
            fault = time.time()
            if scenario == 'hangup':
                self.sim.control('hangup')
            elif scenario == 'down':
                self.sim.control('stop')
                self.watch(DOWN_HOLD, seen)
                self.sim.control('start')
            elif scenario == 'late':
                self.sim.control(f'late {self.kind.late}')
                self.watch(self.kind.late + 4.0, seen)
            else:
                raise ValueError(f'unknown scenario {scenario!r}')
            cleared = time.time()
            stamp = self.fresh_valid(cleared, RECOVERY_TIMEOUT, seen)
            if stamp is not None:
                outcome.recovered_after = max(stamp - cleared, 0.0)
                # and it stays right: the next reading is valid too
                outcome.steady = self.fresh_valid(stamp, RECOVERY_TIMEOUT, seen) is not None
            outcome.readings = [(s, v) for s, v in seen if s >= fault]
            outcome.invalid = [(s, why) for s, v in outcome.readings
                               if (why := self.kind.check(v)) is not None]
        except Exception as exc:          # noqa: BLE001 - recorded, reported by the test
            outcome.error = f'{type(exc).__name__}: {exc}'
        finally:
            try:
                self.sim.control('reset')
                self.sim.control('start')
            except Exception as exc:      # noqa: BLE001
                outcome.error = outcome.error or f'reset: {exc}'
        session = self.session()
        outcome.acq_status = session.get('status')
        outcome.acq_messages = [m[1] for m in session.get('messages', [])][-6:]
        outcome.process_alive = self.service.process.running
        cpu1 = _cpu_seconds(pid)
        if cpu0 is not None and cpu1 is not None:
            outcome.cpu_seconds = cpu1 - cpu0
        return outcome


def run_agent_scenarios(stack, key: str, mode: str,
                        fresh_each: bool = False) -> tuple[list[Outcome], str]:
    """Start one agent in ``mode`` and play every scenario on it; (outcomes, the agent's log).

    ``fresh_each``: a new agent and simulator for each scenario, so one that
    killed acq does not hide what the next one does.
    """
    outcomes, logs = [], []
    for group in ([[s] for s in SCENARIOS] if fresh_each else [list(SCENARIOS)]):
        with stack.scope():
            run = AgentRun(stack, AGENTS[key], mode)
            run.start()
            outcomes += [run.play(scenario) for scenario in group]
            logs.append(run.log)
    return outcomes, '\n'.join(logs)
