#!/usr/bin/env python
"""What N interfaces to one simulated server cost a process: memory, threads, fds, CPU.

Run by ``compare.py`` in a fresh process per client kind, so nothing else
(earlier benchmark phases, other libraries) is in the figures::

    python bench/scale_usage.py --kind socs_tcp --count 1000 --window 3

It starts a ``socs_tcp.sim.echo`` device in another process, builds ``count`` interfaces to
it, checks one reply on each, and prints one JSON line:

- ``rss_per_iface_kb``, ``threads_added``, ``fds_added``: growth from one
  interface (libraries loaded, reactor thread started) to ``count``;
- ``cpu_idle_pct``: CPU of this process, in % of one core, over ``window``
  seconds with every interface connected and nobody calling;
- ``cpu_down_first_pct``: the same over the first ``window`` seconds after the
  device went down (every connection lost at once: the reconnect storm), with
  ``first_connect_failures`` and ``cpu_per_failed_connect_first_us`` (socs_tcp;
  the CPU of handling the lost connections is in it too);
- ``cpu_down_steady_pct``: the same once the reconnect backoff has reached its
  cap (``settle_s`` after the device went down), over at least one capped
  delay: what a site with dead devices pays all day; with
  ``cpu_per_failed_connect_us``, what each failed reconnect attempt costs;
- ``recovery_ms``: with ``--steady``, once the device is back, how long one
  call takes that finds the link down (wall-clock: informative only on a
  shared machine); it connects at once, whatever the backoff says;
- ``replies_ok``, ``mismatches``, ``errors``: the checked replies.

CPU is this process's CPU time (user + system, from the kernel), not
wall-clock, so the figures hold on a busy machine: it is the library's
process (its reactor thread and the benchmark's main thread, which only
sleeps while CPU is measured); the device runs in a child process, whose CPU
is not counted. ``--summary`` prints the failure figures as text after the
JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time

import psutil

from socs_tcp import _arguments as arguments
from support.clients import make_client
from support.devices import start_echo_devices


def usage(proc: psutil.Process) -> dict:
    """RSS (bytes), threads, open fds and CPU seconds (user, system) of ``proc`` now."""
    cpu = proc.cpu_times()
    return {'rss': proc.memory_info().rss, 'threads': proc.num_threads(),
            'fds': proc.num_fds(), 'cpu_s': cpu.user + cpu.system, 'user_s': cpu.user,
            'system_s': cpu.system}


def cpu_percent_over(proc: psutil.Process, seconds: float) -> tuple[float, float]:
    """CPU used by ``proc`` over the next ``seconds``: (total, system part), % of one core."""
    before = usage(proc)
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = usage(proc)
    return (100.0 * (after['cpu_s'] - before['cpu_s']) / elapsed,
            100.0 * (after['system_s'] - before['system_s']) / elapsed)


def backoff_settle_time(b, count: int = 1, rate: float | None = None) -> float:
    """Seconds until the reconnect delay of Backoff ``b`` reaches its cap on each of ``count`` links.

    ``rate``: the library's cap on background attempts per second, if any.
    Over that rate attempts wait their turn, so the delays of many links reach
    their cap later than one link's would.
    """
    delay, total, attempts = b.initial, 0.0, 0
    while delay < b.max_delay:
        total += delay
        delay *= b.factor
        attempts += 1
    if rate is not None:
        total = max(total, (attempts + 1) * count / rate)
    # From here on every interface's next attempt is a capped one: a window of
    # one capped delay holds one attempt each, once the jitter that piled up
    # over the growing delays (a few standard deviations) has passed.
    return total + b.max_delay * 3 * b.jitter


def cpu_down_steady(proc: psutil.Process, ifaces: list, window: float,
                    steady_period: float) -> dict:
    """CPU of ``proc`` while every device stays down and the backoff is at its cap.

    Also the failed reconnects in that window, and the CPU each one cost
    (socs_tcp interfaces only: they count them).
    """
    # Retries come in waves one capped delay apart: average over a
    # whole period at least, or the window catches a wave or misses it.
    steady_window = max(window, steady_period)
    failures = connect_failures(ifaces)
    cpu_before = usage(proc)['cpu_s']
    pct, system_pct = cpu_percent_over(proc, steady_window)
    cpu_used = usage(proc)['cpu_s'] - cpu_before
    failures = connect_failures(ifaces) - failures
    return {'cpu_down_steady_pct': pct, 'cpu_down_steady_system_pct': system_pct,
            'steady_window_s': steady_window, 'steady_connect_failures': failures,
            'cpu_per_failed_connect_us': 1e6 * cpu_used / failures if failures else None}


def connect_failures(ifaces: list) -> int:
    """Failed connection attempts so far over all ``ifaces`` (socs_tcp interfaces count them)."""
    return sum(c.iface.stats['connect_failures'] for c in ifaces if c.kind == 'socs_tcp')


def measure(kind: str, count: int, window: float, settle: float | None,
            options: dict | None = None, steady_period: float = 0.0) -> dict:
    """Build ``count`` interfaces of ``kind`` to one device and measure; see module doc."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc = psutil.Process()
    out = {'kind': kind, 'count': count, 'window_s': window}
    with start_echo_devices(1) as device:
        port = device.port
        ifaces = [make_client(kind, '127.0.0.1', port, 5.0, **(options or {}))]
        ok = mismatches = errors = 0

        def check(client, n):
            nonlocal ok, mismatches, errors
            payload = f'scale-{n}'.encode()
            try:
                reply = client.query(payload)
            except Exception:
                errors += 1
                return
            if reply == payload:
                ok += 1
            else:
                mismatches += 1

        check(ifaces[0], 0)
        gc.collect()
        time.sleep(0.2)
        base = usage(proc)
        for _ in range(1, count):
            ifaces.append(make_client(kind, '127.0.0.1', port, 5.0, **(options or {})))
        for n, client in enumerate(ifaces[1:], 1):
            check(client, n)
        gc.collect()
        time.sleep(0.2)
        full = usage(proc)
        out['connections_at_server'] = int(device.control(0).status()['connections'])
        added = max(1, count - 1)
        out.update(rss_per_iface_kb=(full['rss'] - base['rss']) / added / 1024,
                   rss_base_mb=base['rss'] / 2**20, rss_full_mb=full['rss'] / 2**20,
                   threads_base=base['threads'], threads_full=full['threads'],
                   threads_added=full['threads'] - base['threads'],
                   fds_added=full['fds'] - base['fds'],
                   fds_per_iface=(full['fds'] - base['fds']) / added)
        out['cpu_idle_pct'], out['cpu_idle_system_pct'] = cpu_percent_over(proc, window)
        t_down = time.monotonic()
        failures, cpu_before = connect_failures(ifaces), usage(proc)['cpu_s']
        device.control(0).stop()
        out['cpu_down_first_pct'], out['cpu_down_first_system_pct'] = \
            cpu_percent_over(proc, window)
        if kind == 'socs_tcp':  # the only kind that counts its failed attempts
            failures = out['first_connect_failures'] = connect_failures(ifaces) - failures
            out['cpu_per_failed_connect_first_us'] = (
                1e6 * (usage(proc)['cpu_s'] - cpu_before) / failures if failures else None)
        if settle is not None:
            time.sleep(max(0.0, t_down + settle - time.monotonic()))
            out.update(settle_s=settle, **cpu_down_steady(proc, ifaces, window, steady_period))
            device.control(0).start()
            t0 = time.monotonic()
            check(ifaces[0], 0)
            out['recovery_ms'] = 1e3 * (time.monotonic() - t0)
        out['threads_down'] = proc.num_threads()
        out.update(replies_ok=ok, mismatches=mismatches, errors=errors)
        for client in ifaces:
            client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kind', required=True, choices=('raw', 'socs.tcp', 'socs_tcp'))
    parser.add_argument('--count', type=arguments.command_line(arguments.count, int), default=1000)
    parser.add_argument('--window', type=arguments.command_line(arguments.seconds), default=3.0,
                        help='seconds of each CPU measurement (default 3)')
    parser.add_argument('--steady', action='store_true',
                        help="also measure CPU once socs_tcp's reconnect backoff has settled")
    parser.add_argument('--summary', action='store_true',
                        help='also print the failure figures as text, after the JSON line')
    parser.add_argument('--backoff-max', type=arguments.command_line(arguments.seconds),
                        help="socs_tcp only: Backoff max_delay (default: socs_tcp's default)")
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error('--count must be >= 2')
    options = {}
    settle = None
    if args.kind == 'socs_tcp':
        from socs_tcp import Backoff
        backoff = Backoff() if args.backoff_max is None else Backoff(max_delay=args.backoff_max)
        options['backoff'] = backoff
        if args.steady:
            from socs_tcp._retry import DEFAULT_RATE
            settle = backoff_settle_time(backoff, args.count, DEFAULT_RATE)
    period = options['backoff'].max_delay if 'backoff' in options else 0.0
    out = measure(args.kind, args.count, args.window, settle, options, period)
    if args.kind == 'socs_tcp':
        out['backoff_max_delay_s'] = options['backoff'].max_delay
    print(json.dumps(out))
    if args.summary:
        print(summary(out))
    return 0


def summary(out: dict) -> str:
    """The cost of failures, as text: what a site with dead devices pays."""
    def figure(key: str, fmt: str) -> str:
        return 'n/a' if out.get(key) is None else format(out[key], fmt)
    return '\n'.join([
        f"{out['count']} {out['kind']} links, device down (CPU time of this process, % of one core):",
        f"  first {out['window_s']:g} s:   {figure('cpu_down_first_pct', '.2f')} %  "
        f"({figure('first_connect_failures', 'd')} failed attempts, "
        f"{figure('cpu_per_failed_connect_first_us', '.0f')} us CPU each, the lost connections included)",
        f"  steady state: {figure('cpu_down_steady_pct', '.2f')} %  "
        f"({figure('steady_connect_failures', 'd')} failed attempts in {figure('steady_window_s', 'g')} s, "
        f"{figure('cpu_per_failed_connect_us', '.0f')} us CPU each)",
        f"  recovery:     {figure('recovery_ms', '.1f')} ms for the first call once the device is back"])


if __name__ == '__main__':
    sys.exit(main())
