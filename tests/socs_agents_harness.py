"""Real SOCS agents on a real OCS stack, against simulated devices, under faults.

`SocsAgentsRun` starts, on the crossbar of an `OcsStack` (the session's
``ocs_stack`` of the ``socs_tcp.testing`` plugin), one simulator per SOCS
device (`socs_tcp.sim.devices`), a feed listener (``ocs-client-cli listen``)
and the SOCS agents from the pip package, launched either through ``socs-tcp agent``
(on socs_tcp) or with plain ``ocs-agent-cli`` (on socs.tcp). It then plays the
same fault scenarios against every agent at once (one thread per agent) and
records what each agent did as `Observation` s: the readings it published
(checked against what the simulator can produce), whether its ``acq`` session
survived, degraded and recovered, how long recovery took, and what it logged.
The end-to-end tests assert on those observations; the characterization run
puts the two launchers side by side.

Everything listens on 127.0.0.1 only. SOCS's Lakeshore372Agent always
connects to port 7777 (it has no port option): on socs_tcp its simulator takes
a free port and ``SOCS_TCP_REDIRECT=127.0.0.1:7777=127.0.0.1:<port>`` points
the unchanged agent there; plain socs.tcp cannot be pointed elsewhere, so the
(opt-in) socs.tcp run puts its simulator on 127.0.0.1:7777 itself, when that
port is free.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from socs_tcp.sim.devices import lakeshore372 as ls
from socs_tcp.sim.devices import pfeiffer_tpg366 as tpg
from socs_tcp.sim.devices.cryomech_cpa import STATE_NAMES, TARGETS
from socs_tcp.testing import OcsStack, Simulator

BIN = Path(sys.executable).parent
ADDRESS_ROOT = 'observatory'

#: Bounds on every wait (seconds). Recovery on socs_tcp takes ~1-2 s; the
#: bounds only matter when something is wrong (or for socs.tcp's slow paths).
JOIN_TIMEOUT = 45.0
FIRST_READINGS_TIMEOUT = 20.0
REPORT_TIMEOUT = 15.0        # fault -> the agent reports it (degraded)
RECOVERY_TIMEOUT = 15.0      # fault cleared -> a new valid reading
DOWN_HOLD = 2.0              # how long the device stays down once the agent reported it
SILENT_HOLD = 12.0           # longer than the SOCS drivers' 10 s timeout
POLL = 0.1
#: A reading counts as "after the fault" if taken this long after it cleared
#: (LS372's acq stamps its readings after the query, not before).
AFTER_MARGIN = 0.3


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be listened on at 127.0.0.1 now."""
    with socket.socket() as probe:
        try:
            probe.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


# -- what each SOCS agent publishes, and what is a valid reading ------------------------------

def _within(value, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high


# The PTC's field name -> the compressor model's reading it decodes.
PTC_FLOATS = {'Coolant_In_Temp': 'coolant_in_temp', 'Coolant_Out_Temp': 'coolant_out_temp',
              'Oil_Temp': 'oil_temp', 'Helium_Temp': 'helium_temp',
              'Low_Pressure': 'low_pressure', 'Low_Pressure_Average': 'low_pressure',
              'High_Pressure': 'high_pressure', 'High_Pressure_Average': 'high_pressure',
              'Motor_Current': 'motor_current'}
PTC_FIELDS = {*PTC_FLOATS, 'Operating_State', 'Compressor_State', 'Warning_State',
              'Alarm_State', 'Delta_Pressure_Average', 'Hours_of_Operation', 'Pressure_Unit',
              'Temperature_Unit'}


def check_ptc_status(block: str, data: dict) -> str | None:
    """Why a ``ptc_status`` sample is not one the simulated CPA can produce (None: valid)."""
    if set(data) != PTC_FIELDS:
        return f'fields {sorted(set(data) ^ PTC_FIELDS)} missing or unexpected'
    for name, model_name in PTC_FLOATS.items():
        off, on = TARGETS[model_name]
        low, high = min(off, on) * 0.9 - 1.0, max(off, on) * 1.1 + 1.0
        if not _within(data[name], max(low, 0.0), high):
            return f'{name}={data[name]!r} outside {max(low, 0.0):g}..{high:g}'
    if data['Operating_State'] not in STATE_NAMES or data['Compressor_State'] not in (0, 1):
        return f'state {data["Operating_State"]}/{data["Compressor_State"]}'
    if data['Warning_State'] or data['Alarm_State']:
        return 'warning or alarm set'
    if not _within(data['Delta_Pressure_Average'], -5.0, 400.0):
        return f'Delta_Pressure_Average={data["Delta_Pressure_Average"]!r}'
    if not _within(data['Hours_of_Operation'], 12000.0, 13000.0):
        return f'Hours_of_Operation={data["Hours_of_Operation"]!r}'
    if (data['Pressure_Unit'], data['Temperature_Unit']) != (0, 1):
        return 'units'
    return None


def check_temperatures(block: str, data: dict) -> str | None:
    """Why a ``temperatures`` sample is not one the simulated 372 can produce (None: valid)."""
    stages = {name.replace(' ', '_'): kelvin for name, kelvin in ls.STAGES.values()}
    if block not in stages:
        return f'block {block!r} is not a channel of the bridge'
    if set(data) != {f'{block}_T', f'{block}_R'}:
        return f'fields {sorted(data)}'
    kelvin, ohms = data[f'{block}_T'], data[f'{block}_R']
    base = stages[block]
    if not _within(kelvin, 0.95 * base, 1.05 * base):
        return f'{block}_T={kelvin!r}, the sensor sits at {base} K'
    if not _within(ohms, 0.9 * ls.ruox_resistance(1.05 * base), 1.1 * ls.ruox_resistance(0.95 * base)):
        return f'{block}_R={ohms!r} does not match {base} K'
    return None


def check_pressures(block: str, data: dict) -> str | None:
    """Why a ``pressures`` sample is not one the simulated TPG 366 can produce (None: valid)."""
    expected = {f'pressure_ch{i}' for i in range(1, 7)}
    if block != 'pressures' or set(data) != expected:
        return f'block {block!r} fields {sorted(data)}'
    for i, gauge in enumerate(tpg.TPG366State().gauges, start=1):
        value = data[f'pressure_ch{i}']
        if gauge.status != tpg.OK:
            if value != 0.0:
                return f'pressure_ch{i}={value!r} for a channel without sensor'
        elif not _within(value, 0.9 * (gauge.floor or gauge.pressure), 1.1 * gauge.pressure):
            return f'pressure_ch{i}={value!r}, the gauge reads ~{gauge.pressure}'
    return None


@dataclass(frozen=True)
class AgentKind:
    """One SOCS agent class under test, its simulated device and its feed."""

    key: str
    agent_class: str
    sim_kind: str
    feed: str
    arguments: Callable[[str, int], list]     # (device host, port) -> site-config arguments
    check: Callable[[str, dict], str | None]   # (block, fields) -> why invalid, or None
    failure_log: str                           # what its acq logs when a poll fails
    fixed_port: int | None = None              # the agent cannot be told another port


AGENTS = {
    'cpa': AgentKind(
        'cpa', 'CryomechCPAAgent', 'cryomech-cpa', 'ptc_status',
        lambda host, port: ['--ip-address', host, '--port', port, '--mode', 'acq'],
        check_ptc_status, 'Failed to get data from compressor'),
    'ls372': AgentKind(
        'ls372', 'Lakeshore372Agent', 'lakeshore372', 'temperatures',
        lambda host, port: ['--ip-address', host, '--serial-number', 'LSASIM', '--mode', 'acq'],
        check_temperatures, 'Failed to get data from LS372', fixed_port=7777),
    'tpg366': AgentKind(
        'tpg366', 'PfeifferAgent', 'pfeiffer-tpg366', 'pressures',
        lambda host, port: ['--ip_address', host, '--port', port, '--mode', 'acq'],
        check_pressures, 'Failed to get data from device'),
}

LAUNCHERS = {'socs_tcp': [str(BIN / 'socs-tcp'), 'agent'], 'socs.tcp': [str(BIN / 'ocs-agent-cli')]}


# -- published readings -------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One reading an agent published: when it was taken, its block and fields."""

    instance_id: str
    feed: str
    block: str
    timestamp: float
    data: dict


class FeedLog:
    """The samples ``ocs-client-cli listen --json`` wrote to its log so far.

    The listener prints one JSON line per feed message; OCS buffers a recorded
    feed's samples and publishes them as blocks of lists, which are unpacked
    here into one `Sample` each. Thread-safe; the file is read incrementally.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._offset = 0
        self._partial = b''
        self._samples: list[Sample] = []

    def samples(self, instance_id: str, feed: str, after: float = 0.0) -> list[Sample]:
        """Samples of ``instance_id``'s ``feed`` taken after ``after`` (epoch s), oldest first."""
        with self._lock:
            self._read_new()
            return [s for s in self._samples
                    if s.instance_id == instance_id and s.feed == feed and s.timestamp > after]

    def _read_new(self) -> None:
        try:
            with open(self.path, 'rb') as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b'\n')
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b'{"topic"'):
                self._samples.extend(self._unpack(json.loads(line)))
        self._samples.sort(key=lambda s: s.timestamp)

    @staticmethod
    def _unpack(event: dict) -> list[Sample]:
        parts = event['topic'].split('.')
        if len(parts) != 4 or parts[2] != 'feeds' or parts[3] == 'heartbeat':
            return []
        blocks, _feed_info = event['message']
        out = []
        for name, block in blocks.items():
            for i, stamp in enumerate(block['timestamps']):
                out.append(Sample(parts[1], parts[3], name, stamp,
                                  {k: v[i] for k, v in block['data'].items()}))
        return out


# -- what happened ------------------------------------------------------------------------

@dataclass
class Observation:
    """What one agent did in one scenario.

    Attributes
    ----------
    agent, scenario : str
    valid, invalid : int, list
        Readings published during the scenario, valid ones counted, invalid
        ones kept as ``(sample, why)``.
    reported_after : float or None
        Seconds from the fault to the agent reporting it (``degraded``).
    recovered_after : float or None
        Seconds from the fault's end to its first valid reading taken after
        it (None: none within the bound).
    degraded_seen : bool
        The acq session was degraded at some point of the scenario.
    acq_status, acq_degraded : str, bool
        The acq session at the end; ``status`` is ``'running'`` unless it
        ended (a crash: see ``acq_messages``).
    acq_restarted : bool
        acq had ended in an earlier scenario and was started again for this
        one, as an operator would.
    process_alive : bool
    log : str
        What the agent wrote (stdout/stderr) during the scenario.
    error : str or None
        A harness-level failure (e.g. the agent never joined), else None.
    """

    agent: str
    scenario: str
    valid: int = 0
    invalid: list = field(default_factory=list)
    reported_after: float | None = None
    recovered_after: float | None = None
    degraded_seen: bool = False
    acq_status: str | None = None
    acq_degraded: bool | None = None
    acq_messages: list = field(default_factory=list)
    acq_restarted: bool = False
    process_alive: bool = False
    log: str = ''
    error: str | None = None

    @property
    def acq_running(self) -> bool:
        return self.acq_status == 'running'

    def summary(self) -> str:
        def secs(v):
            return '-' if v is None else f'{v:.1f} s'
        return (f'{self.agent}/{self.scenario}: acq {self.acq_status}'
                f'{" (degraded)" if self.acq_degraded else ""}, valid={self.valid} '
                f'invalid={len(self.invalid)}, degraded_seen={self.degraded_seen}, '
                f'reported={secs(self.reported_after)}, recovered={secs(self.recovered_after)}'
                f'{", ERROR " + self.error.splitlines()[0] if self.error else ""}')


class AgentUnderTest:
    """One launched SOCS agent with its simulator and client."""

    def __init__(self, kind: AgentKind, instance_id: str, sim: Simulator, service) -> None:
        self.kind = kind
        self.instance_id = instance_id
        self.sim = sim
        self.service = service          # the agent's process (a stack Service)
        self.client = None
        self.join_error: str | None = None

    @property
    def process(self):
        return self.service.process

    def log_size(self) -> int:
        return len(self.process.read_log())

    def log_since(self, size: int) -> str:
        return self.process.read_log()[size:]

    def acq(self) -> dict:
        return self.client.acq.status().session


class SocsAgentsRun:
    """SOCS agents on one launcher, on a stack's crossbar, and the scenarios played on them.

    Parameters
    ----------
    stack : OcsStack
        Its crossbar runs (or is starting), with address root `ADDRESS_ROOT`.
        Everything this run starts is stopped by `stop`; the crossbar is left
        running.
    launcher : {'socs_tcp', 'socs.tcp'}
        ``socs-tcp agent`` or plain ``ocs-agent-cli``.
    kinds : sequence of str
        Keys of `AGENTS` to run (default: all).
    """

    def __init__(self, stack: OcsStack, launcher: str, kinds: Sequence[str] = tuple(AGENTS)) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f'launcher must be one of {sorted(LAUNCHERS)}, got {launcher!r}')
        if stack.crossbar is None:
            raise ValueError('the stack must have its crossbar started')
        self.launcher = launcher
        self.tag = launcher.replace('.', '-').replace('_', '-')   # instance ids, names
        self.kinds = [AGENTS[k] for k in kinds]
        self.stack = stack
        self.agents: dict[str, AgentUnderTest] = {}
        self.feeds: FeedLog | None = None
        self.stop_records: list = []
        self.processes: list = []          # every process this run started
        self._scope = contextlib.ExitStack()

    # -- starting -------------------------------------------------------------------

    def start(self) -> None:
        """Start everything; return once each agent joined and published, or failed to.

        An agent that exits or never joins is recorded (``join_error``), not
        raised: the other agents' scenarios still run.
        """
        stack = self.stack
        self._scope.enter_context(stack.scope())
        sims, envs = {}, {}
        for kind in self.kinds:
            args: list[str] = []
            if kind.fixed_port is not None and self.launcher == 'socs.tcp':
                if not port_is_free(kind.fixed_port):
                    raise RuntimeError(f'{kind.agent_class} on socs.tcp needs 127.0.0.1:'
                                       f'{kind.fixed_port} for its simulator, and it is taken')
                args = ['--port', str(kind.fixed_port)]
            sims[kind.key] = stack.start_simulator(kind.sim_kind, f'{kind.sim_kind}-{self.tag}',
                                                   args=args, wait=False)
            self.processes.append(sims[kind.key].process)
        for kind in self.kinds:
            sim = sims[kind.key]
            sim.wait_ready()
            port = sim.port
            if kind.fixed_port is not None and self.launcher == 'socs_tcp':
                envs[kind.key] = {'SOCS_TCP_REDIRECT': f'127.0.0.1:{kind.fixed_port}=127.0.0.1:{port}'}
                port = kind.fixed_port
            stack.add_agent(f'{kind.key}-{self.tag}', kind.agent_class, kind.arguments('127.0.0.1', port))
        stack.crossbar.wait_ready()      # agents started earlier would only back off
        stack.write_site_config()
        for kind in self.kinds:
            iid = f'{kind.key}-{self.tag}'
            service = stack.start_service(
                f'agent-{iid}', [*LAUNCHERS[self.launcher], '--instance-id', iid,
                                 '--site-host', 'localhost'], expect=(), wait=False,
                env=envs.get(kind.key))
            self.agents[kind.key] = AgentUnderTest(kind, iid, sims[kind.key], service)
            self.processes.append(service.process)
        listener = stack.start_service(
            f'feeds-{self.tag}', [str(BIN / 'ocs-client-cli'), 'listen', '--json', f'{ADDRESS_ROOT}..feeds.'],
            expect=(), wait=False)
        self.processes.append(listener.process)
        self.feeds = FeedLog(listener.process.log_path)
        self._wait_joined()
        self._wait_first_readings()

    def _wait_joined(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT
        pending = dict(self.agents)
        while pending and time.monotonic() < deadline:
            for key, agent in list(pending.items()):
                if not agent.process.running:
                    agent.join_error = (f'agent exited with status {agent.process.returncode} '
                                        f'before joining; log:\n{agent.process.log_tail(30)}')
                    del pending[key]
                    continue
                try:
                    agent.client = self.stack.client(agent.instance_id)
                except Exception:       # ControlClientError until it registered
                    continue
                del pending[key]
            time.sleep(0.2)
        for agent in pending.values():
            agent.join_error = (f'agent did not join within {JOIN_TIMEOUT} s; log:\n'
                                f'{agent.process.log_tail(30)}')

    def _wait_first_readings(self) -> None:
        deadline = time.monotonic() + FIRST_READINGS_TIMEOUT
        for agent in self.agents.values():
            if agent.join_error:
                continue
            while not self._valid_after(agent, 0.0):
                if time.monotonic() > deadline or not agent.process.running:
                    agent.join_error = (f'no valid reading within {FIRST_READINGS_TIMEOUT} s; '
                                        f'acq: {safe_acq(agent)}; log:\n{agent.process.log_tail(30)}')
                    break
                time.sleep(POLL)

    # -- readings -------------------------------------------------------------------------

    def readings(self, agent: AgentUnderTest, after: float = 0.0) -> list[Sample]:
        return self.feeds.samples(agent.instance_id, agent.kind.feed, after)

    def _valid_after(self, agent: AgentUnderTest, after: float) -> Sample | None:
        for sample in self.readings(agent, after):
            if agent.kind.check(sample.block, sample.data) is None:
                return sample
        return None

    def invalid_readings(self, agent: AgentUnderTest, after: float = 0.0,
                         before: float = math.inf) -> list[tuple]:
        return [(s, why) for s in self.readings(agent, after) if s.timestamp <= before
                and (why := agent.kind.check(s.block, s.data)) is not None]

    # -- scenarios ------------------------------------------------------------------------

    def play(self, scenarios: Sequence[str]) -> dict[str, list[Observation]]:
        """Play ``scenarios`` (names of ``scenario_*`` methods) on every agent at once.

        Returns
        -------
        dict
            Agent key -> one `Observation` per scenario, in order.
        """
        def run_all(agent: AgentUnderTest) -> list[Observation]:
            return [self._observe(agent, name) for name in scenarios]

        with ThreadPoolExecutor(max_workers=len(self.agents)) as pool:
            futures = {key: pool.submit(run_all, agent) for key, agent in self.agents.items()}
            return {key: f.result() for key, f in futures.items()}

    def _observe(self, agent: AgentUnderTest, scenario: str) -> Observation:
        obs = Observation(agent.kind.key, scenario)
        if agent.join_error:
            obs.error = agent.join_error
            return obs
        started, log_at = time.time(), agent.log_size()
        try:
            if safe_acq(agent).get('status') not in ('starting', 'running'):
                self._restart_acq(agent, obs)
            getattr(self, f'scenario_{scenario}')(agent, obs)
        except Exception:
            obs.error = traceback.format_exc(limit=3)
        try:                                      # no fault leaks into the next scenario
            agent.sim.control('reset')
            if sim_status(agent.sim).get('listening') != '1':
                agent.sim.control('start')
        except Exception:
            obs.error = (obs.error or '') + traceback.format_exc(limit=3)
        ended = time.time()
        readings = self.readings(agent, started)
        obs.invalid = self.invalid_readings(agent, started, ended)
        obs.valid = sum(1 for s in readings if s.timestamp <= ended) - len(obs.invalid)
        session = safe_acq(agent)
        obs.acq_status = session.get('status')
        obs.acq_degraded = session.get('degraded')
        obs.acq_messages = [m[1] for m in session.get('messages', [])][-3:]
        obs.process_alive = agent.process.running
        obs.log = agent.log_since(log_at)
        return obs

    def _restart_acq(self, agent: AgentUnderTest, obs: Observation) -> None:
        """Start acq again after it ended (crashed) in an earlier scenario; wait for readings."""
        obs.acq_restarted = True
        agent.client.acq.start()
        since = time.time()
        self._watch(agent, obs, lambda s: self._valid_after(agent, since) is not None,
                    RECOVERY_TIMEOUT)
        obs.degraded_seen = False       # what counts is what the fault does

    def _watch(self, agent: AgentUnderTest, obs: Observation, until: Callable[[dict], bool],
               timeout: float) -> float | None:
        """Poll the acq session (noting degraded) until ``until(session)``; return when, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            session = safe_acq(agent)
            obs.degraded_seen |= bool(session.get('degraded'))
            if until(session):
                return time.time()
            if session.get('status') not in (None, 'starting', 'running'):
                return None                         # acq ended: it will not recover by itself
            time.sleep(POLL)
        return None

    def _recovery(self, agent: AgentUnderTest, obs: Observation, cleared: float) -> None:
        """Record the first valid reading taken after ``cleared`` and degraded clearing."""
        found = {}

        def recovered(session: dict) -> bool:
            sample = self._valid_after(agent, cleared + AFTER_MARGIN)
            if sample is not None:
                found.setdefault('at', sample.timestamp)
            return sample is not None and not session.get('degraded')

        self._watch(agent, obs, recovered, RECOVERY_TIMEOUT)
        if 'at' in found:
            obs.recovered_after = found['at'] - cleared

    def scenario_readings(self, agent: AgentUnderTest, obs: Observation) -> None:
        """No fault: valid readings keep coming (three more from now)."""
        since = time.time()
        self._watch(agent, obs, lambda s: len(self.readings(agent, since)) >= 3, RECOVERY_TIMEOUT)

    def _connection_fault(self, agent: AgentUnderTest, obs: Observation, command: str) -> None:
        cleared = time.time()
        agent.sim.control(command)     # the device stays up: the fault is over at once
        self._recovery(agent, obs, cleared)

    def scenario_drop(self, agent: AgentUnderTest, obs: Observation) -> None:
        """The device resets the connection (RST) and keeps listening."""
        self._connection_fault(agent, obs, 'drop')

    def scenario_hangup(self, agent: AgentUnderTest, obs: Observation) -> None:
        """The device closes the connection cleanly (FIN) and keeps listening."""
        self._connection_fault(agent, obs, 'hangup')

    def scenario_down(self, agent: AgentUnderTest, obs: Observation) -> None:
        """The device goes away (connections dropped, refused), then comes back."""
        fault = time.time()
        agent.sim.control('stop')
        reported = self._watch(agent, obs, lambda s: bool(s.get('degraded')), REPORT_TIMEOUT)
        if reported is not None:
            obs.reported_after = reported - fault
            self._watch(agent, obs, lambda s: False, DOWN_HOLD)   # and stays up, degraded
        cleared = time.time()
        agent.sim.control('start')
        self._recovery(agent, obs, cleared)

    def scenario_silent(self, agent: AgentUnderTest, obs: Observation) -> None:
        """The device stops answering (connected, reading requests) for longer than a timeout."""
        fault = time.time()
        agent.sim.control('silent on')
        reported = self._watch(agent, obs, lambda s: bool(s.get('degraded')), SILENT_HOLD + 5)
        if reported is not None:
            obs.reported_after = reported - fault
        cleared = time.time()
        agent.sim.control('silent off')
        self._recovery(agent, obs, cleared)

    # -- stopping -------------------------------------------------------------------------

    def stop(self) -> list:
        """Stop what this run started (agents, simulators and listener together); idempotent.

        Returns
        -------
        list of StopRecord
            Those of the stack so far (this run's among them).
        """
        self._scope.close()
        self.stop_records = list(self.stack.stop_records)
        return self.stop_records

    def stop_record(self, agent: AgentUnderTest):
        return next(r for r in self.stop_records if r.pid == agent.process.pid)


def sim_status(sim: Simulator) -> dict:
    """A simulator's ``status`` as a dict of strings (``listening``, ``connections``, ...)."""
    return dict(part.split('=', 1) for part in sim.control('status').split() if '=' in part)


def safe_acq(agent: AgentUnderTest) -> dict:
    """The agent's acq session, or {} when it cannot be read (agent gone, crossbar busy)."""
    try:
        return agent.acq()
    except Exception:
        return {}
