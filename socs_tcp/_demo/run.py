"""``socs-tcp demo``: the sample agents on a real OCS stack, in one command.

Starts a private crossbar (127.0.0.1, free port), the simulated compressor
and power supply, and both agents through ``ocs-agent-cli`` from a generated
site config; then drives them with ``OCSClient`` like an operator would:

1. identify both devices and switch the compressor on;
2. watch live readings arrive from both ``acq`` processes;
3. cut the compressor off (its simulator stops listening and drops the
   agent): its ``acq`` turns DEGRADED and keeps running;
4. meanwhile set the power supply's output voltage and read it back (and
   show a bad parameter refused), proving the other agent is unaffected;
5. bring the compressor back: the agent reports the connection re-established;
6. watch until ``--duration`` is over (``--keep-running``: until Ctrl-C);
7. stop every process it started (also on Ctrl-C or an error) and print a
   summary. Exit status 0 when every step worked.

Terminal output is the user interface here; diagnostics of the stack go to
``<workdir>/demo.log``, and every process logs to ``<workdir>/logs/``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import globalLogPublisher, textFileLogObserver

from socs_tcp._arguments import command_line, seconds
from socs_tcp._demo.view import LiveView
from socs_tcp.testing._processes import StopRecord
from socs_tcp.testing._stack import OcsStack, Simulator

DEFAULT_DURATION = 30.0   # scripted part; startup (~6 s) and shutdown (~7 s) come on top
DEFAULT_OUTAGE = 5.0
SAMPLE_INTERVAL = 1.0     # agents' --sample-interval: quick enough to see things move
DEVICE_TIMEOUT = 2.0      # agents' --timeout
TICK = 0.25               # live view refresh / status poll period
PSU_VOLTS = 12.0
PSU_AMPS = 2.0            # current limit above 12 V / 10 ohm (the simulated load)
PSU_BAD_VOLTS = 99.0      # outside the supply's 0..30 V: must be refused

COMPRESSOR, PSU = 'compressor-1', 'psu-1'
KEEP_RUNNING = 'running until Ctrl-C'


class SigtermReceived(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


def make_parser() -> argparse.ArgumentParser:
    seconds_or_zero = command_line(seconds, allow_zero=True)
    parser = argparse.ArgumentParser(
        prog='socs-tcp demo',
        description='Run crossbar, two simulated devices and their OCS agents on this '
                    'machine, inject an outage, run a task, and stop everything.')
    parser.add_argument('--duration', type=seconds_or_zero, default=DEFAULT_DURATION,
                        help='seconds of the scripted part after the agents joined; steps '
                             'that need longer still finish (default %(default)g)')
    parser.add_argument('--outage', type=seconds_or_zero, default=DEFAULT_OUTAGE,
                        help='seconds the compressor stays unreachable (default %(default)g)')
    parser.add_argument('--keep-running', action='store_true',
                        help='after the script, keep everything running and the view live '
                             'until Ctrl-C')
    parser.add_argument('--workdir', default=None,
                        help='directory for site config, crossbar dir and logs '
                             '(default: a new temporary directory)')
    return parser


@dataclass
class Step:
    name: str
    ok: bool | None = None      # None: not reached
    detail: str = ''


@dataclass
class AgentWatch:
    """What the demo has seen of one agent's ``acq`` process."""

    instance_id: str
    client: Any          # ocs.ocs_client.OCSClient (untyped)
    fields: dict = field(default_factory=dict)
    timestamps: set = field(default_factory=set)
    connected: bool | None = None
    degraded: bool = False
    status: str = '?'
    error: str = ''
    last_error: str = ''

    def poll(self) -> None:
        try:
            reply = self.client.acq.status()
        except Exception as exc:  # crossbar or agent gone: show it, keep going
            self.error = f'{type(exc).__name__}: {exc}'
            return
        self.error = ''
        session = reply.session or {}
        data = session.get('data') or {}
        self.status = session.get('status', '?')
        self.degraded = bool(session.get('degraded'))
        self.connected = data.get('connected')
        self.last_error = data.get('last_error') or ''
        if data.get('timestamp'):
            self.timestamps.add(data['timestamp'])
            self.fields = dict(data.get('fields') or {})

    @property
    def readings(self) -> int:
        return len(self.timestamps)

    @property
    def latest(self) -> float:
        return max(self.timestamps, default=0.0)


def _num(fields: dict, key: str, fmt: str) -> str:
    value = fields.get(key)
    return format(value, fmt) if isinstance(value, (int, float)) else '-'


class Demo:
    """The scripted run; every step is bounded and recorded in ``steps``."""

    def __init__(self, args: argparse.Namespace, stack: OcsStack, view: LiveView) -> None:
        self.args = args
        self.stack = stack
        self.view = view
        self.steps: dict[str, Step] = {name: Step(name) for name in (
            'start', 'identify', 'readings', 'outage', 'psu task', 'recovery', 'shutdown')}
        self.watches: dict[str, AgentWatch] = {}
        self.facts: dict[str, object] = {}
        self.phase = 'starting'
        # the compressor's simulator (the outage is injected there), once started
        self.sim: Simulator | None = None

    # -- helpers -------------------------------------------------------------
    def ok(self, step: str, detail: str) -> None:
        self.steps[step].ok, self.steps[step].detail = True, detail
        self.view.event(f'{self.view.colour("ok", "green")}   {step}: {detail}')

    def fail(self, step: str, detail: str) -> None:
        self.steps[step].ok, self.steps[step].detail = False, detail
        self.view.event(f'{self.view.colour("FAIL", "red")} {step}: {detail}')

    def live_lines(self) -> list[str]:
        """Status and readings of each agent: two lines each on a terminal (fits
        80 columns), one line each in plain output."""
        lines = [self.view.colour(f'  [{self.phase}]', 'dim')]
        for iid, body in ((COMPRESSOR, self._compressor_text), (PSU, self._psu_text)):
            watch = self.watches.get(iid)
            if watch is None:
                continue
            if watch.error:
                state = self.view.colour('NO STATUS', 'red')
            elif watch.degraded:
                state = self.view.colour('DEGRADED ', 'red')
            elif watch.connected:
                state = self.view.colour('connected', 'green')
            else:
                state = self.view.colour('waiting  ', 'yellow')
            age = f'{time.time() - watch.latest:4.1f} s ago' if watch.latest else 'none yet'
            head = f'  {iid:<13} {state}  {watch.readings:3d} readings, last {age}'
            if self.view.ansi:
                lines += [head, f'      {body(watch.fields)}']
            else:
                lines.append(f'{head}: {body(watch.fields)}')
        return lines

    @staticmethod
    def _compressor_text(f: dict) -> str:
        return (f'{f.get("operating_state_name", "-"):<8}  He {_num(f, "helium_temp", "4.1f")} C'
                f'  oil {_num(f, "oil_temp", "4.1f")} C  LP {_num(f, "low_pressure", "5.1f")}'
                f'  HP {_num(f, "high_pressure", "5.1f")} psi  motor '
                f'{_num(f, "motor_current", "4.1f")} A')

    @staticmethod
    def _psu_text(f: dict) -> str:
        states: dict[object, str] = {1: 'on', 0: 'off'}
        out = states.get(f.get('output'), '-')
        return (f'output {out:<3}  {_num(f, "voltage", "6.3f")} V (set '
                f'{_num(f, "voltage_setpoint", "5.2f")})  {_num(f, "current", "5.3f")} A '
                f'(limit {_num(f, "current_setpoint", "4.2f")})')

    def tick(self) -> None:
        for watch in self.watches.values():
            watch.poll()
        self.view.live(self.live_lines())

    def watch_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Refresh the view until ``done()`` or ``timeout`` seconds; return done()."""
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(TICK)

    def task(self, client, name: str, timeout: float = 15.0, **params):
        """Run a task to its end; return ``(ok, message)``."""
        op = getattr(client, name)
        reply = op.start(**params)
        if reply.status != 0:   # ocs.OK; refused before starting (e.g. bad param)
            return False, reply.msg
        reply = op.wait(timeout=timeout)
        session = reply.session or {}
        # the op's own return message; OCS appends 'Status is now "done".' after it
        texts = [m[1] for m in session.get('messages') or []
                 if not str(m[1]).startswith('Status is now')]
        return bool(session.get('success')), (texts[-1] if texts else reply.msg)

    # -- the script -------------------------------------------------------------
    def run(self) -> None:
        self.start()
        t0 = time.monotonic()
        self.identify()
        self.phase = 'readings'
        self.readings()
        self.outage_and_task()
        self.phase = 'watching'
        remaining = t0 + self.args.duration - time.monotonic()
        if remaining > 0:
            self.view.event(f'watching for {remaining:.0f} s more')
            self.watch_until(lambda: False, remaining)
        if self.args.keep_running:
            self.phase = KEEP_RUNNING
            self.view.event('script done; everything keeps running until Ctrl-C')
            self.watch_until(lambda: False, float('inf'))

    def start(self) -> None:
        stack, t_start = self.stack, time.monotonic()
        self.view.event(f'starting crossbar, simulators and agents (work dir {stack.workdir})')
        crossbar = stack.start_crossbar(wait=False)       # ~4 s: overlap the simulators
        sims = {kind: stack.start_simulator(kind, wait=False) for kind in ('compressor', 'psu')}
        for sim in sims.values():
            sim.wait_ready()
        # Agents started before crossbar listens back off ~2 s between attempts to
        # join; started once it is ready, they join ~1.5 s later (their start-up).
        crossbar.wait_ready()
        self.facts['sims'] = {kind: sim.ports for kind, sim in sims.items()}
        common = ['--timeout', DEVICE_TIMEOUT, '--sample-interval', SAMPLE_INTERVAL,
                  '--mode', 'acq']
        stack.add_agent(COMPRESSOR, 'CompressorAgent',
                        ['--ip-address', '127.0.0.1', '--port', sims['compressor'].port, *common])
        stack.add_agent(PSU, 'PowerSupplyAgent',
                        ['--ip-address', '127.0.0.1', '--port', sims['psu'].port, *common])
        for iid in (COMPRESSOR, PSU):
            stack.start_agent(iid)
        clients = stack.wait_agents(COMPRESSOR, PSU)
        self.watches = {iid: AgentWatch(iid, client) for iid, client in clients.items()}
        self.sim = sims['compressor']
        seconds = time.monotonic() - t_start
        self.facts['startup'] = seconds
        self.ok('start', f'crossbar 127.0.0.1:{crossbar.port}, simulators '
                         f':{sims["compressor"].port} :{sims["psu"].port}, '
                         f'agents {COMPRESSOR} {PSU} joined in {seconds:.1f} s')

    def identify(self) -> None:
        comp, psu = self.watches[COMPRESSOR].client, self.watches[PSU].client
        results = [('compressor init', *self.task(comp, 'init')),
                   ('psu init', *self.task(psu, 'init')),
                   ('compressor power on', *self.task(comp, 'power', state='on'))]
        bad = [f'{what}: {msg}' for what, good, msg in results if not good]
        if bad:
            self.fail('identify', '; '.join(bad))
        else:
            self.ok('identify', ' | '.join(msg for _, _, msg in results))

    def readings(self) -> None:
        want = 3
        got = self.watch_until(lambda: all(w.readings >= want for w in self.watches.values()),
                               timeout=10 * SAMPLE_INTERVAL + 5)
        counts = ', '.join(f'{w.instance_id} {w.readings}' for w in self.watches.values())
        (self.ok if got else self.fail)('readings', f'readings arriving ({counts})')

    def outage_and_task(self) -> None:
        comp = self.watches[COMPRESSOR]
        self.phase = 'outage'
        self.view.event(self.view.colour(
            f'injecting an outage: compressor simulator stops listening and drops its '
            f'clients for {self.args.outage:g} s', 'yellow'))
        t_cut = time.monotonic()
        assert self.sim is not None, 'the outage follows the start'
        self.sim.control('stop')
        if self.watch_until(lambda: comp.degraded and comp.connected is False,
                            timeout=3 * DEVICE_TIMEOUT + 5):
            seen = time.monotonic() - t_cut
            self.facts['degraded_after'] = seen
            self.view.event(f'{COMPRESSOR} reports: {comp.last_error}')
            self.ok('outage', f'{COMPRESSOR} acq {self.view.colour("DEGRADED", "red")} '
                              f'{seen:.1f} s after the cut, still running')
        else:
            self.fail('outage', f'{COMPRESSOR} never showed degraded (status {comp.status}, '
                                f'connected {comp.connected})')

        self.phase = 'outage; psu task'
        self.psu_task()

        self.phase = 'outage'
        hold = t_cut + self.args.outage - time.monotonic()
        if hold > 0:
            self.watch_until(lambda: False, hold)
        self.sim.control('start')
        t_back = time.monotonic()
        self.facts['outage'] = t_back - t_cut
        self.view.event(f'compressor simulator listening again after {t_back - t_cut:.1f} s')
        self.phase = 'recovery'
        n_before = comp.readings
        if self.watch_until(lambda: not comp.degraded and bool(comp.connected)
                            and comp.readings > n_before, timeout=10 + 2 * DEVICE_TIMEOUT):
            back = time.monotonic() - t_back
            self.facts['recovered_after'] = back
            self.ok('recovery', f'{COMPRESSOR} connection '
                                f'{self.view.colour("re-established", "green")} {back:.1f} s '
                                f'after the device came back; degraded cleared')
        else:
            self.fail('recovery', f'{COMPRESSOR} still degraded={comp.degraded} '
                                  f'connected={comp.connected}')

    def psu_task(self) -> None:
        psu = self.watches[PSU]
        steps: list[tuple[str, dict[str, Any]]] = [
            ('set_current', {'current': PSU_AMPS}), ('set_output', {'state': 'on'}),
            ('set_voltage', {'voltage': PSU_VOLTS})]
        for name, params in steps:
            good, msg = self.task(psu.client, name, **params)
            self.view.event(f'psu {name}({params}) -> {"ok" if good else "FAILED"}: {msg}')
            if not good:
                self.fail('psu task', f'{name} failed: {msg}')
                return
        t_done = time.time()

        def read_back() -> bool:
            f = psu.fields
            return (psu.latest > t_done and f.get('voltage_setpoint') == PSU_VOLTS
                    and isinstance(f.get('voltage'), (int, float))
                    and abs(f['voltage'] - PSU_VOLTS) < 0.2)

        if not self.watch_until(read_back, timeout=5 * SAMPLE_INTERVAL + 2 * DEVICE_TIMEOUT):
            self.fail('psu task', f'read back set point {psu.fields.get("voltage_setpoint")} V'
                                  f' and output {psu.fields.get("voltage")} V, expected '
                                  f'{PSU_VOLTS:g} V')
            return
        measured = psu.fields['voltage']
        self.facts['psu_voltage'] = measured
        refused, why = self.task(psu.client, 'set_voltage', voltage=PSU_BAD_VOLTS)
        if refused:
            self.fail('psu task', f'set_voltage({PSU_BAD_VOLTS:g}) was accepted')
            return
        self.ok('psu task', f'set_voltage({PSU_VOLTS:g}) read back {measured:.3f} V by acq; '
                            f'set_voltage({PSU_BAD_VOLTS:g}) refused: {why}')

    # -- the end ----------------------------------------------------------------------
    def shutdown(self) -> list[StopRecord]:
        self.phase = 'stopping'
        n = len(self.stack.processes)
        self.view.event(f'stopping the {n} processes started (SIGINT, then SIGTERM/SIGKILL '
                        f'if needed)')
        records = self.stack.stop()
        gone = all(r.returncode is not None for r in records)
        hard = [r.name for r in records if r.ended_by in ('SIGTERM', 'SIGKILL')]
        detail = f'{len(records)} processes stopped'
        if hard:
            detail += f' ({", ".join(hard)} needed SIGTERM/SIGKILL)'
        (self.ok if gone else self.fail)('shutdown', detail)
        return records

    def summary(self, records: Sequence[StopRecord], total: float, interrupted: str) -> str:
        col = self.view.colour
        lines = ['', col('socs-tcp demo: summary', 'bold'), '-' * 60]
        width = max(60, shutil.get_terminal_size((100, 24)).columns - 1)
        for step in self.steps.values():
            mark = {True: col('ok  ', 'green'), False: col('FAIL', 'red'),
                    None: col('--  ', 'yellow')}[step.ok]
            detail = textwrap.wrap(step.detail or 'not reached', width - 16) or ['']
            lines.append(f' {mark} {step.name:<9} {detail[0]}')
            lines += [' ' * 16 + more for more in detail[1:]]
        lines.append('-' * 60)
        counts = ', '.join(f'{w.instance_id} {w.readings}' for w in self.watches.values())
        lines.append(f' readings seen      {counts or "-"}')
        f = self.facts
        if 'outage' in f:
            lines.append(f' outage             {f["outage"]:.1f} s (degraded shown after '
                         f'{f.get("degraded_after", float("nan")):.1f} s)')
        if 'recovered_after' in f:
            lines.append(f' recovery           re-established {f["recovered_after"]:.1f} s '
                         f'after the device came back')
        if 'psu_voltage' in f:
            lines.append(f' psu task           set {PSU_VOLTS:g} V, read back '
                         f'{f["psu_voltage"]:.3f} V')
        for r in records:
            lines.append(f' stopped            {r.name:<15} pid {r.pid:<7} by {r.ended_by:<7} '
                         f'in {r.seconds:4.1f} s, exit status {r.returncode}')
        lines.append(f' total time         {total:.1f} s')
        lines.append(f' logs               {self.stack.log_dir}')
        if interrupted:
            lines.append(f' {interrupted}')
        return '\n'.join(lines)


def _sigterm(signum, frame):
    raise SigtermReceived()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return 0 when every step worked (also after Ctrl-C with
    ``--keep-running``), 1 when a step failed, 130 when interrupted early."""
    args = make_parser().parse_args(argv)
    t_start = time.monotonic()
    view = LiveView()
    stack = OcsStack(args.workdir)
    log_file = open(stack.workdir / 'demo.log', 'a', encoding='utf-8')
    observer = textFileLogObserver(log_file)
    globalLogPublisher.addObserver(observer)
    demo = Demo(args, stack, view)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    interrupted = ''
    records: list[StopRecord] = []
    try:
        try:
            demo.run()
        except (KeyboardInterrupt, SigtermReceived) as exc:
            what = 'Ctrl-C' if isinstance(exc, KeyboardInterrupt) else 'SIGTERM'
            if demo.phase != KEEP_RUNNING:   # there, Ctrl-C is the normal way out
                interrupted = f'interrupted by {what} during "{demo.phase}"'
            view.event(f'{what}: shutting down')
        except Exception as exc:  # any failure still ends in a clean shutdown + summary
            step = next((s for s in demo.steps.values() if s.ok is None), None)
            if step is not None:
                demo.fail(step.name, f'{type(exc).__name__}: {exc}')
            else:
                view.event(f'error: {type(exc).__name__}: {exc}')
                interrupted = f'error: {type(exc).__name__}: {exc}'
        finally:
            records = demo.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)
        view.close()
        globalLogPublisher.removeObserver(observer)
        log_file.close()
    print(demo.summary(records, time.monotonic() - t_start, interrupted), flush=True)
    if interrupted.startswith('interrupted'):
        return 130
    failed = [s for n, s in demo.steps.items() if s.ok is False]
    if failed or interrupted:
        return 1
    return 0 if all(s.ok for s in demo.steps.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
