"""The performance targets socs_tcp is held to, checked against compare.py's figures.

Each target reads socs_tcp's figure from the results, states the limit and
says PASS or FAIL. A figure that wasn't measured (section skipped) is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Check:
    """One figure next to its target."""

    name: str
    value: float | int | None
    shown: str         # the value as printed
    target: str        # the limit as printed
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt_ms(seconds: float) -> str:
    return f'{seconds * 1000:.1f} ms'


def check_targets(results: dict) -> list[Check]:
    """Every target that the measured sections allow to check."""
    checks: list[Check] = []
    lat = results.get('latency')
    if lat and 'p50_ratio' in lat:
        ratio = lat['p50_ratio']
        checks.append(Check('query p50 socs_tcp/socs.tcp (median of runs)', ratio,
                            f'{ratio:.2f}x', '<= 2.5x', ratio <= 2.5))
    if lat and 'socs_tcp' in lat['summary']:
        n = str(lat['threads'])
        s = lat['summary']['socs_tcp'][n]
        bad = s['mismatches'] + s['errors']
        checks.append(Check(f'{n}-thread queries on one interface: mismatches+errors', bad,
                            f'{bad} of {s["queries"]} ({s["qps"]:.0f} q/s)', '0', bad == 0))
    faults = results.get('faults')
    if faults and 'socs_tcp' in faults['refused']['clients']:
        worst = faults['refused']['clients']['socs_tcp']['worst_s']
        checks.append(Check('fail when refused, worst call', worst, _fmt_ms(worst),
                            '<= 10 ms', worst <= 0.010))
        limit = faults['timeout_s'] + 0.25
        for scenario in ('refused', 'silent', 'blackhole'):
            worst = faults[scenario]['clients']['socs_tcp']['worst_s']
            checks.append(Check(f'{scenario}: worst call', worst, _fmt_ms(worst),
                                f'<= timeout+0.25 = {limit:.2f} s', worst <= limit))
    recovery = results.get('recovery')
    if recovery:
        for period, per_label in recovery.items():
            rec = per_label.get('socs_tcp')
            if rec is None:
                continue
            worst = rec['worst_retry_to_good_s']
            ok = worst is not None and worst <= 0.100 and rec['gave_up'] == 0
            shown = 'never recovered' if worst is None else _fmt_ms(worst)
            checks.append(Check(f'back -> good reply after next retry (every {period})', worst,
                                shown, '<= 100 ms', ok))
    scale = results.get('scale', {}).get('socs_tcp')
    if scale:
        count = scale['count']
        checks.append(Check(f'{count} interfaces: threads added', scale['threads_added'],
                            str(scale['threads_added']), 'no thread per interface (<= 2)',
                            scale['threads_added'] <= 2))
        checks.append(Check(f'{count} interfaces: RSS per interface', scale['rss_per_iface_kb'],
                            f'{scale["rss_per_iface_kb"]:.1f} KB', '< 30 KB',
                            scale['rss_per_iface_kb'] < 30))
        checks.append(Check(f'{count} interfaces: CPU idle', scale['cpu_idle_pct'],
                            f'{scale["cpu_idle_pct"]:.2f} %', '< 2 % of a core',
                            scale['cpu_idle_pct'] < 2))
        key = 'cpu_down_steady_pct' if 'cpu_down_steady_pct' in scale else 'cpu_down_first_pct'
        label = 'steady' if key == 'cpu_down_steady_pct' else f'first {scale["window_s"]:g} s'
        checks.append(Check(f'{count} interfaces: CPU all down ({label})', scale[key],
                            f'{scale[key]:.2f} %', '< 5 % of a core', scale[key] < 5))
    correctness = results.get('correctness')
    if correctness:
        bad = correctness['socs_tcp_mismatches'] + correctness['socs_tcp_other_errors']
        checks.append(Check('socs_tcp: wrong replies + unexpected exceptions, all phases', bad,
                            str(bad), '0', bad == 0))
    return checks
