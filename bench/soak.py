#!/usr/bin/env python
"""Chaos soak: socs_tcp interfaces polled by worker threads while devices misbehave.

``python bench/soak.py --minutes N --devices M [--seconds S]``

M simulated echo devices run in a separate process (``socs_tcp.sim.echo``).
This process holds one ``socs_tcp.TCPInterface`` per device, each polled by
worker threads (two per interface by default: an agent's acquisition loop and
a task that shares the interface), every query with a unique payload. A chaos
loop picks a random device every few hundred milliseconds and drops its
connections, silences it, delays or fragments its replies, blackholes it, or
restarts it (stop, then start on the same port), each for a random while,
through the devices' control channels (the commands of `socs_tcp.sim.control`).

The devices live in another process, like real hardware: in this process
they would share its interpreter lock and reactor with the interfaces under
test, so server work could make calls late (or hide late calls) for reasons
no real site has.

Printed at the end, and checked:

- queries, replies verified;
- misattributed replies (a reply that isn't the echo of its request): must be 0;
- calls that returned later than timeout + 0.25 s: must be 0;
- ConnectionErrors: expected, counted;
- other exceptions: must be 0;
- fds / threads / RSS at start and end: no growth beyond noise;
- every interface answers again once the chaos stops.

Exit status 1 on any violation, 0 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil

from socs_tcp import _arguments as arguments
from support.devices import ServerProcess, start_echo_devices

HOST = '127.0.0.1'
LATE_MARGIN = 0.25    # the contract's bound: no call longer than timeout + this
RSS_NOISE_MB = 8.0    # allocator noise allowed between start and end
FD_NOISE = 2


@dataclass
class Counts:
    """What the worker threads saw (each worker keeps its own, summed at the end)."""

    queries: int = 0
    verified: int = 0
    misattributed: int = 0
    late: int = 0
    connection_errors: int = 0
    other: int = 0
    worst_s: float = 0.0
    examples: list = field(default_factory=list)
    by_error: Counter = field(default_factory=Counter)

    def add(self, other: Counts) -> None:
        for name in ('queries', 'verified', 'misattributed', 'late', 'connection_errors',
                     'other'):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.worst_s = max(self.worst_s, other.worst_s)
        self.examples.extend(other.examples[:5])
        self.by_error.update(other.by_error)


def poll(iface, name: str, timeout: float, stop: threading.Event, counts: Counts,
         rng: random.Random) -> None:
    """Query ``iface`` until ``stop``, like an agent loop; count every outcome."""
    seq = 0
    while not stop.is_set():
        payload = f'{name}-{seq}'.encode()
        seq += 1
        counts.queries += 1
        t0 = time.monotonic()
        try:
            reply = iface.query(payload)
        except ConnectionError as exc:
            failed = True
            counts.connection_errors += 1
            counts.by_error[type(exc).__name__] += 1
        except Exception as exc:
            failed = True
            counts.other += 1
            if len(counts.examples) < 5:
                counts.examples.append(f'{name}: {type(exc).__name__}: {exc}')
        else:
            failed = False
            if reply == payload:
                counts.verified += 1
            else:
                counts.misattributed += 1
                if len(counts.examples) < 5:
                    counts.examples.append(f'{name}: sent {payload!r}, got {reply!r}')
        took = time.monotonic() - t0
        counts.worst_s = max(counts.worst_s, took)
        if took > timeout + LATE_MARGIN:
            counts.late += 1
            if len(counts.examples) < 5:
                counts.examples.append(f'{name}: call took {took:.3f} s')
        # An agent polls every so often, and backs off a little after an error.
        stop.wait(rng.uniform(0.05, 0.2) if failed else rng.uniform(0.0, 0.02))


class Chaos:
    """Random faults on random devices, each healed after a random while."""

    FAULTS = ('drop', 'silent', 'delay', 'fragments', 'restart', 'blackhole')

    def __init__(self, devices: ServerProcess, count: int, timeout: float, rng: random.Random):
        self.devices = devices
        self.count = count
        self.timeout = timeout
        self.rng = rng
        self.heal_at: dict[int, tuple[float, str]] = {}   # device -> (when, command)
        self.events: Counter = Counter()

    def _break(self, fault: str) -> tuple[str, str | None]:
        """The control commands that cause ``fault`` and heal it (None: heals itself)."""
        if fault == 'drop':
            return 'drop', None
        if fault == 'silent':
            return 'silent on', 'reset'
        if fault == 'delay':
            # Both sides of the timeout: slow replies, and replies that come
            # after the caller gave up (which must never reach a later query).
            return f'delay {self.rng.uniform(0.01, 1.5 * self.timeout):.3f}', 'reset'
        if fault == 'fragments':
            size = self.rng.randint(1, 4)
            return f'fragments {size} {self.rng.choice((0.0, 0.001, 0.01))}', 'reset'
        if fault == 'restart':
            return 'stop', 'start'
        return 'blackhole on', 'blackhole off'

    def step(self) -> None:
        """Heal what is due, then break one healthy device."""
        now = time.monotonic()
        for i, (when, command) in list(self.heal_at.items()):
            if when <= now:
                self.devices.control(i).send(command)
                del self.heal_at[i]
        healthy = [i for i in range(self.count) if i not in self.heal_at]
        if not healthy:
            return
        i = self.rng.choice(healthy)
        fault = self.rng.choice(self.FAULTS)
        lasting = self.rng.uniform(0.2, 3.0)
        command, heal = self._break(fault)
        self.devices.control(i).send(command)
        if heal is not None:
            self.heal_at[i] = (now + lasting, heal)
        self.events[fault] += 1

    def heal_all(self) -> None:
        for i, (_, command) in list(self.heal_at.items()):
            self.devices.control(i).send(command)
        self.heal_at.clear()


def snapshot(proc: psutil.Process) -> dict:
    gc.collect()
    return {'fds': proc.num_fds(), 'threads': proc.num_threads(),
            'rss_mb': proc.memory_info().rss / 2**20}


def wait_all_answer(ifaces: list, deadline: float) -> int:
    """Query each interface until it answers or ``deadline``; return how many answered."""
    answered = 0
    for n, iface in enumerate(ifaces):
        while time.monotonic() < deadline:
            try:
                if iface.query(f'check-{n}'.encode()) == f'check-{n}'.encode():
                    answered += 1
                    break
            except ConnectionError:
                time.sleep(0.05)
    return answered


def start_workers(ifaces: list, threads_per_device: int, timeout: float, stop: threading.Event,
                  rng: random.Random) -> tuple[list[threading.Thread], list[Counts]]:
    """Start ``threads_per_device`` polling threads per interface; return them and their counts."""
    per_worker: list[Counts] = []
    workers = []
    for d, iface in enumerate(ifaces):
        for t in range(threads_per_device):
            counts = Counts()
            per_worker.append(counts)
            workers.append(threading.Thread(
                target=poll, name=f'soak-{d}-{t}', daemon=True,
                args=(iface, f'd{d}t{t}', timeout, stop, counts, random.Random(rng.random()))))
    for w in workers:
        w.start()
    return workers, per_worker


def run_chaos(chaos: Chaos, seconds: float, per_worker: list[Counts], rng: random.Random) -> None:
    """Break and heal devices for ``seconds``, with a progress line on stderr every 5 s."""
    t0 = last_report = time.monotonic()
    while time.monotonic() - t0 < seconds:
        chaos.step()
        time.sleep(rng.uniform(0.05, 0.3))
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            done = sum(c.queries for c in per_worker)
            sys.stderr.write(f'[{last_report - t0:5.0f} s] {done} queries, '
                             f'{sum(chaos.events.values())} faults so far\n')
            sys.stderr.flush()
    chaos.heal_all()


def violations_of(f: dict) -> list[str]:
    """What the soak's figures ``f`` must not show; empty when all counts held."""
    s, e = f['start'], f['end']
    checks = [
        (f['misattributed'], f'{f["misattributed"]} misattributed replies'),
        (f['late'], f'{f["late"]} calls later than timeout + {LATE_MARGIN} s'),
        (f['other'], f'{f["other"]} unexpected exceptions'),
        (f['stuck_workers'], f'{len(f["stuck_workers"])} worker threads did not stop'),
        (f['recovered'] != f['devices'],
         f'only {f["recovered"]} of {f["devices"]} interfaces answered after the chaos'),
        (f['verified'] == 0, 'no reply was verified at all'),
        (e['threads'] > s['threads'], f'threads grew {s["threads"]} -> {e["threads"]}'),
        (e['fds'] > s['fds'] + FD_NOISE, f'fds grew {s["fds"]} -> {e["fds"]}'),
        (e['rss_mb'] > s['rss_mb'] + RSS_NOISE_MB,
         f'RSS grew {s["rss_mb"]:.1f} -> {e["rss_mb"]:.1f} MB'),
    ]
    return [text for failed, text in checks if failed]


def soak(devices_count: int, seconds: float, *, timeout: float, threads_per_device: int,
         seed: int) -> tuple[dict, list[str]]:
    """Run the soak; return (figures, violations)."""
    from socs_tcp import TCPInterface

    rng = random.Random(seed)
    proc = psutil.Process()
    with start_echo_devices(devices_count) as devices:
        ifaces = [TCPInterface(HOST, port, timeout, read_termination=b'\n',
                               write_termination=b'\n') for port in devices.ports]
        try:
            ready = wait_all_answer(ifaces, time.monotonic() + 10)
            if ready != devices_count:
                raise RuntimeError(f'only {ready} of {devices_count} devices answered at start')
            stop = threading.Event()
            start = snapshot(proc)
            t0 = time.monotonic()
            workers, per_worker = start_workers(ifaces, threads_per_device, timeout, stop, rng)
            chaos = Chaos(devices, devices_count, timeout, rng)
            run_chaos(chaos, seconds, per_worker, rng)
            stop.set()
            for w in workers:
                w.join(timeout + LATE_MARGIN + 5)
            stuck = [w.name for w in workers if w.is_alive()]
            elapsed = time.monotonic() - t0
            recovered = wait_all_answer(ifaces, time.monotonic() + 10)
            end = snapshot(proc)
            stats = [iface.stats for iface in ifaces]
        finally:
            for iface in ifaces:
                iface.close()

    total = Counts()
    for c in per_worker:
        total.add(c)
    figures = {
        'devices': devices_count, 'seconds': elapsed, 'timeout_s': timeout,
        'threads_per_device': threads_per_device, 'queries': total.queries,
        'verified': total.verified, 'misattributed': total.misattributed,
        'late': total.late, 'worst_call_s': total.worst_s,
        'connection_errors': total.connection_errors,
        'connection_errors_by_type': dict(total.by_error), 'other': total.other,
        'examples': total.examples[:10], 'chaos': dict(chaos.events), 'start': start,
        'end': end, 'recovered': recovered, 'stuck_workers': stuck,
        'reconnects': sum(s['connects'] for s in stats) - devices_count,
        'timeouts': sum(s['timeouts'] for s in stats),
        'stale_bytes_dropped': sum(s['stale_bytes_dropped'] for s in stats),
    }
    return figures, violations_of(figures)


def report(f: dict, violations: list[str]) -> str:
    """The summary a person reads (and tests parse): one figure per line."""
    s, e = f['start'], f['end']
    lines = [
        f'soak: {f["devices"]} devices, {f["threads_per_device"]} threads each, '
        f'{f["seconds"]:.0f} s, timeout {f["timeout_s"]:g} s',
        'chaos events: ' + ', '.join(f'{k} {v}' for k, v in sorted(f['chaos'].items())),
        f'queries: {f["queries"]}',
        f'replies verified: {f["verified"]}',
        f'misattributed replies: {f["misattributed"]}',
        f'late calls (> timeout + {LATE_MARGIN} s): {f["late"]}',
        f'worst call: {f["worst_call_s"]:.3f} s',
        f'ConnectionErrors (expected): {f["connection_errors"]} '
        f'({", ".join(f"{k} {v}" for k, v in sorted(f["connection_errors_by_type"].items()))})',
        f'other exceptions: {f["other"]}',
        f'reconnects: {f["reconnects"]}, query timeouts: {f["timeouts"]}, '
        f'stale bytes dropped: {f["stale_bytes_dropped"]}',
        f'interfaces answering after the chaos: {f["recovered"]}/{f["devices"]}',
        f'fds: {s["fds"]} -> {e["fds"]}',
        f'threads: {s["threads"]} -> {e["threads"]}',
        f'RSS MB: {s["rss_mb"]:.1f} -> {e["rss_mb"]:.1f}',
    ]
    lines += [f'  example: {x}' for x in f['examples'][:5]]
    lines.append('RESULT: PASS' if not violations else 'RESULT: FAIL: ' + '; '.join(violations))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    positive_seconds = arguments.command_line(arguments.seconds)
    positive_count = arguments.command_line(arguments.count, int)
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=positive_seconds, default=1.0,
                        help='duration (default 1)')
    parser.add_argument('--seconds', type=positive_seconds,
                        help='duration in seconds (overrides --minutes)')
    parser.add_argument('--devices', type=positive_count, default=20,
                        help='simulated devices (default 20)')
    parser.add_argument('--timeout', type=positive_seconds, default=1.0,
                        help='interface timeout, s (default 1)')
    parser.add_argument('--threads-per-device', type=positive_count, default=2,
                        help='worker threads sharing each interface (default 2)')
    parser.add_argument('--seed', type=int, help='random seed (default: time-based, printed)')
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    seed = args.seed if args.seed is not None else int(time.time())
    print(f'seed: {seed}', flush=True)
    figures, violations = soak(args.devices, seconds, timeout=args.timeout,
                               threads_per_device=args.threads_per_device, seed=seed)
    print(report(figures, violations))
    return 1 if violations else 0


if __name__ == '__main__':
    sys.exit(main())
