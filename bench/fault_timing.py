"""How long calls take to fail when a device misbehaves, and to recover.

Both measurements fault the devices of a `support.devices.start_echo_devices`
child through their control channels (one device per client, so the clients
run side by side in threads without disturbing each other) and time every
call a worker thread makes.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from dataclasses import dataclass, field

from support.clients import make_client, wait_connected
from support.percentiles import median

HOST = '127.0.0.1'

#: The clients of the fault and recovery figures: socs.tcp twice, because a
#: driver's choice of ``recv(reset_on_error=...)`` changes its worst case.
FAULT_CLIENTS = {
    'raw': ('raw', {}),
    'socs.tcp': ('socs.tcp', {}),
    'socs.tcp reset': ('socs.tcp', {'reset_on_error': True}),
    'socs_tcp': ('socs_tcp', {}),
}

#: Fault scenarios: control command to break a device, command to heal it,
#: and what the fault looks like from the client.
SCENARIOS = {
    'refused': ('stop', 'start',
                'device off: connections dropped, port closed (connect refused)'),
    'silent': ('silent on', 'reset',
               'device accepts and reads, never answers'),
    'blackhole': ('blackhole on', 'blackhole off',
                  'open connection silent and new connects hang (SYNs dropped: '
                  'a listener with a full backlog that never accepts)'),
}


def client_labels(available: tuple[str, ...]) -> list[str]:
    """The labels of `FAULT_CLIENTS` whose library is importable here."""
    return [label for label, (kind, _) in FAULT_CLIENTS.items() if kind in available]


def _build(label: str, port: int, timeout: float):
    kind, options = FAULT_CLIENTS[label]
    return make_client(kind, HOST, port, timeout, **options)


def _command(devices, command: str, i: int) -> float:
    """Send one control command to device ``i``; return when it was sent.

    The device obeyed by the time this returns: the time before sending is
    the earliest it can have taken effect, so a recovery measured from it is
    never shorter than the real one.
    """
    sent = time.monotonic()
    devices.control(i).send(command)
    return sent


@dataclass
class CallLog:
    """Every call one client made: durations (s) and outcomes."""

    durations: list[float] = field(default_factory=list)
    failures: int = 0          # ConnectionError/OSError: the expected outcome in a fault
    successes: int = 0         # a correct reply
    mismatches: int = 0        # a reply that was not the request's echo
    other_errors: list[str] = field(default_factory=list)   # anything else


def _timed_calls(client, calls: int, tag: str) -> CallLog:
    log = CallLog()
    for n in range(calls):
        payload = f'{tag}-{n}'.encode()
        t0 = time.monotonic()
        try:
            reply = client.query(payload)
        except OSError:   # ConnectionError, TimeoutError, socket errors
            log.failures += 1
        except Exception as exc:
            log.other_errors.append(f'{type(exc).__name__}: {exc}')
        else:
            if reply == payload:
                log.successes += 1
            else:
                log.mismatches += 1
        log.durations.append(time.monotonic() - t0)
    return log


def _run_side_by_side(jobs: dict) -> dict:
    """Run ``{label: callable}`` in one worker thread each; return their results."""
    results: dict = {}

    def run(label, job):
        results[label] = job()

    threads = [threading.Thread(target=run, args=item, name=f'bench-{item[0]}')
               for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measure_faults(devices, labels: list[str], *, timeout: float, calls: int,
                   progress=lambda text: None) -> dict:
    """Time ``calls`` back-to-back queries per client in each fault scenario.

    ``devices`` is a `support.devices.start_echo_devices` child with at
    least ``len(labels)`` devices; client ``k``
    uses device ``k``. Each scenario starts from fresh clients that have had
    one good reply.

    Returns
    -------
    dict
        ``{scenario: {'description': str, 'clients': {label: {...}}}}`` with
        per client: ``worst_s``, ``median_s``, ``first_s`` (the call that met
        the fault first), ``calls``, ``failures``, ``successes``,
        ``mismatches``, ``other_errors``; plus ``timeout_s``.
    """
    out = {'timeout_s': timeout, 'calls': calls}
    for scenario, (breaker, healer, description) in SCENARIOS.items():
        progress(f'faults: {scenario}')
        clients = {label: _build(label, devices.ports[k], timeout)
                   for k, label in enumerate(labels)}
        try:
            for label, client in clients.items():
                if not wait_connected(client):
                    raise RuntimeError(f'{label} could not reach its device')
            for k in range(len(labels)):
                _command(devices, breaker, k)
            logs = _run_side_by_side({
                label: functools.partial(_timed_calls, client, calls, f'{scenario}-{label}')
                for label, client in clients.items()})
        finally:
            for k in range(len(labels)):
                _command(devices, healer, k)
            for client in clients.values():
                client.close()
        out[scenario] = {'description': description, 'clients': {
            label: {'worst_s': max(log.durations), 'median_s': median(log.durations),
                    'first_s': log.durations[0], 'calls': len(log.durations),
                    'failures': log.failures, 'successes': log.successes,
                    'mismatches': log.mismatches, 'other_errors': log.other_errors}
            for label, log in ((lb, logs[lb]) for lb in labels)}}
    return out


def _recovery_caller(client, period: float, tag: str, give_up: float) -> list[tuple]:
    """Retry like an agent loop until one good reply: [(start, end, outcome), ...]."""
    attempts = []
    n = 0
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        payload = f'{tag}-{n}'.encode()
        n += 1
        start = time.monotonic()
        try:
            reply = client.query(payload)
            outcome = 'ok' if reply == payload else 'mismatch'
        except OSError:
            outcome = 'fail'
        except Exception as exc:
            outcome = f'{type(exc).__name__}: {exc}'
        attempts.append((start, time.monotonic(), outcome))
        if outcome == 'ok':
            return attempts
        time.sleep(period)   # the agent loop SOCS documents for its TCPInterface: sleep(1) after a ConnectionError
    return attempts


def _start_after(devices, labels: list[str], delay: float, t_up: dict[str, float]) -> None:
    """Sleep ``delay`` s, then start device ``k`` of every label; note when in ``t_up``."""
    time.sleep(delay)
    for k, label in enumerate(labels):
        t_up[label] = _command(devices, 'start', k)


def _score_recovery(record: dict, tries: list[tuple], up: float) -> None:
    """Add one repetition's attempts ``(start, end, outcome)`` to ``record``; ``up``: device back."""
    for _start, end, outcome in tries:
        if outcome == 'mismatch':
            record['mismatches'] += 1
        elif outcome not in ('ok', 'fail'):
            record['other_errors'].append(outcome)
        if outcome == 'ok' and end < up:
            record['early_success'] += 1
    good = [a for a in tries if a[2] == 'ok' and a[1] >= up]
    if not good:
        record['gave_up'] += 1
        return
    good_end = good[0][1]
    next_try = next(a for a in tries if a[1] >= up)
    record['back_to_good_s'].append(good_end - up)
    record['retry_to_good_s'].append(good_end - max(next_try[0], up))


def measure_recovery(devices, labels: list[str], *, periods: tuple[float, ...], reps: int,
                     timeout: float, progress=lambda text: None, seed: int = 1) -> dict:
    """Time from "device back" to the first good reply, for callers retrying every period.

    Per repetition: every device goes down (refused), the callers start
    retrying, and after a random 0.3-1.3 s (so the device returns at a random
    phase of the retry loop) the devices come back. ``back_to_good_s`` runs
    from the device listening again to the end of the first good reply;
    ``retry_to_good_s`` from the start of the caller's next attempt after
    that moment (or that moment, for an attempt already under way) to the
    same end.

    Returns
    -------
    dict
        ``{f'{period}s': {label: {'retry_to_good_s': [...], 'back_to_good_s':
        [...], 'worst_retry_to_good_s', 'worst_back_to_good_s', 'mismatches',
        'early_success', 'other_errors', 'gave_up'}}}``.
    """
    rng = random.Random(seed)
    out: dict = {}
    for period in periods:
        per_label = {label: {'retry_to_good_s': [], 'back_to_good_s': [], 'mismatches': 0,
                             'early_success': 0, 'other_errors': [], 'gave_up': 0}
                     for label in labels}
        clients = {label: _build(label, devices.ports[k], timeout)
                   for k, label in enumerate(labels)}
        try:
            for label, client in clients.items():
                if not wait_connected(client):
                    raise RuntimeError(f'{label} could not reach its device')
            for rep in range(reps):
                progress(f'recovery: retry every {period:g} s, {rep + 1}/{reps}')
                for k in range(len(labels)):
                    _command(devices, 'stop', k)
                down_for = rng.uniform(0.3, 1.3)
                t_up: dict[str, float] = {}
                give_up = down_for + 2 * period + 3 * timeout + 2.0

                back = threading.Thread(target=_start_after, name='bench-device-back',
                                        args=(devices, labels, down_for, t_up))
                back.start()
                attempts = _run_side_by_side({
                    label: functools.partial(_recovery_caller, client, period,
                                             f'rec-{period}-{rep}-{label}', give_up)
                    for label, client in clients.items()})
                back.join()
                for label, tries in attempts.items():
                    _score_recovery(per_label[label], tries, t_up[label])
        finally:
            for client in clients.values():
                client.close()
        for record in per_label.values():
            record['worst_retry_to_good_s'] = max(record['retry_to_good_s'], default=None)
            record['worst_back_to_good_s'] = max(record['back_to_good_s'], default=None)
        out[f'{period:g}s'] = per_label
    return out


def measure_stale(devices, labels: list[str], *, timeout: float, calls: int = 3,
                  progress=lambda text: None) -> dict:
    """Does a reply that comes after its caller gave up answer a later query?

    Each device answers one request 1.5 x ``timeout`` late (the call times
    out), then answers at once again; the device sends replies in request
    order, so the next reply comes right behind the late one. The client then
    makes ``calls`` more queries, each reply checked against its request.

    Returns
    -------
    dict
        ``{'timeout_s', 'clients': {label: {'wrong_replies', 'good_replies',
        'failures', 'first_timed_out'}}}``.
    """
    progress('faults: late reply')
    clients = {label: _build(label, devices.ports[k], timeout)
               for k, label in enumerate(labels)}

    def job(label, client, k):
        first = _timed_calls(client, 1, f'late-{label}')
        _command(devices, 'reset', k)
        after = _timed_calls(client, calls, f'after-{label}')
        return {'first_timed_out': first.failures == 1, 'wrong_replies': after.mismatches,
                'good_replies': after.successes, 'failures': after.failures,
                'other_errors': after.other_errors + first.other_errors}

    try:
        for label, client in clients.items():
            if not wait_connected(client):
                raise RuntimeError(f'{label} could not reach its device')
        for k in range(len(labels)):
            _command(devices, f'delay {1.5 * timeout:.3f}', k)
        results = _run_side_by_side({
            label: (lambda lb=label, c=client, k=k: job(lb, c, k))
            for k, (label, client) in enumerate(clients.items())})
    finally:
        for k in range(len(labels)):
            _command(devices, 'reset', k)
        for client in clients.values():
            client.close()
    return {'timeout_s': timeout, 'calls': calls,
            'clients': {label: results[label] for label in labels}}
