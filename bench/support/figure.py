"""The one-page PNG of compare.py's figures (matplotlib, Agg backend)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use('Agg')   # no display here, and none needed for a PNG
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {'raw': '#9e9e9e', 'socs.tcp': '#e69f00', 'socs.tcp reset': '#f0c060',
          'socs_tcp': '#0072b2'}


def _ms_label(v: float) -> str:
    """A duration in ms as a short label (seconds past one second)."""
    if v >= 1000:
        return f'{v / 1000:.2f} s'
    return f'{v:.2g}' if v < 10 else f'{v:.0f}'


def _period_label(key: str) -> str:
    """'1s' -> 'retry every 1 s', '0.05s' -> 'retry every 50 ms'."""
    seconds = float(key.rstrip('s'))
    return f'retry every {seconds:g} s' if seconds >= 1 else f'retry every {seconds * 1000:g} ms'


def _bars(ax, groups: list[str], series: dict[str, list[float]], *, fmt='{:.0f}'):
    """Grouped bars: one group per entry of ``groups``, one bar per series.

    ``fmt`` is a format string or a callable that labels each bar's value.
    """
    label_of = fmt if callable(fmt) else fmt.format
    n = len(series)
    width = 0.8 / max(n, 1)
    for j, (label, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        vals = [v if v is not None and not math.isnan(v) else 0 for v in values]
        bars = ax.bar(xs, vals, width, label=label, color=COLORS.get(label))
        for bar, v in zip(bars, values, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            ax.annotate(label_of(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha='center', va='bottom', fontsize=7, xytext=(0, 1),
                        textcoords='offset points')
    ax.set_xticks(range(len(groups)), groups)


def _target(ax, y: float, text: str):
    ax.axhline(y, color='#d62728', linestyle='--', linewidth=1)
    # Left end: the leftmost groups (idle, refused, RSS) have the short bars.
    ax.annotate(text, (0.01, y), xycoords=('axes fraction', 'data'), ha='left', va='bottom',
                fontsize=7, color='#d62728')


def _latency_panels(ax, ax2, lat: dict) -> None:
    kinds = list(lat['summary'])
    n = str(lat['threads'])
    _bars(ax, ['p50, 1 thread', 'p99, 1 thread', f'p50, {n} threads'],
          {k: [lat['summary'][k]['1']['p50_us'], lat['summary'][k]['1']['p99_us'],
               lat['summary'][k][n]['p50_us']] for k in kinds})
    ax.set_yscale('log')   # p99 tails can be 10-50x the medians
    ax.set_ylim(bottom=10)
    ax.set_ylabel('µs per query, log (lower is better)')
    ratio = lat.get('p50_ratio')
    ax.set_title('Query latency' + (f' (p50 socs_tcp/socs.tcp = {ratio:.2f}x, '
                                    f'target <= 2.5x)' if ratio else ''))
    ax.legend(fontsize=8)
    _bars(ax2, ['1 thread', f'{n} threads on one interface'],
          {k: [lat['summary'][k]['1']['qps'], lat['summary'][k][n]['qps']] for k in kinds})
    ax2.set_ylabel('queries/s (higher is better)')
    ax2.set_title(f'Throughput ({n} threads: raw, socs.tcp need a lock)')


def _faults_panel(ax, faults: dict) -> None:
    scenarios = ['refused', 'silent', 'blackhole']
    labels = list(faults['refused']['clients'])
    _bars(ax, scenarios, {lb: [faults[s]['clients'][lb]['worst_s'] * 1000 for s in scenarios]
                          for lb in labels}, fmt=_ms_label)
    ax.set_yscale('log')
    t = faults['timeout_s'] * 1000
    _target(ax, t + 250, 'timeout + 0.25 s')
    _target(ax, 10, 'refused target 10 ms')
    ax.set_ylabel('worst call, ms (log)')
    ax.set_title(f'Time to fail, timeout {faults["timeout_s"]:g} s')
    # Above the short "refused" bars, between the two target lines.
    ax.legend(fontsize=8, loc='lower left', bbox_to_anchor=(0.0, 0.52))


def _recovery_panel(ax, rec: dict) -> None:
    periods = list(rec)
    labels = list(rec[periods[0]])
    _bars(ax, [_period_label(p) for p in periods],
          {lb: [(rec[p][lb]['worst_retry_to_good_s'] or math.nan) * 1000 for p in periods]
           for lb in labels}, fmt='{:.0f}')
    _target(ax, 100, 'target 100 ms')
    ax.set_ylabel('ms, worst (lower is better)')
    ax.set_title("Recovery: caller's next retry -> first good reply")
    ax.legend(fontsize=8)


def _scale_panels(ax, ax2, scale: dict) -> None:
    kinds = list(scale)
    count = scale[kinds[0]]['count']
    _bars(ax, ['RSS per interface, KB', 'threads added', 'fds per interface'],
          {k: [scale[k]['rss_per_iface_kb'], scale[k]['threads_added'],
               scale[k]['fds_per_iface']] for k in kinds}, fmt='{:.1f}')
    _target(ax, 30, 'RSS target 30 KB')
    ax.set_title(f'{count} interfaces to one server, one process')
    ax.legend(fontsize=8)
    groups = ['idle', 'all down, first seconds', 'all down, steady']
    _bars(ax2, groups, {k: [scale[k]['cpu_idle_pct'], scale[k]['cpu_down_first_pct'],
                            scale[k].get('cpu_down_steady_pct', math.nan)] for k in kinds},
          fmt='{:.1f}')
    _target(ax2, 5, 'down target 5 %')
    _target(ax2, 2, 'idle target 2 %')
    ax2.set_ylabel('% of one core')
    ax2.set_title(f'CPU of {count} interfaces')
    ax2.legend(fontsize=8)


def write_plot(results: dict, path: str) -> None:
    """Draw the latency, throughput, time-to-fail, recovery and scale panels into ``path``.

    A section that wasn't measured leaves its panels out.
    """
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    machine = results.get('machine', {})
    fig.suptitle(f'socs_tcp vs socs.tcp vs raw socket, loopback, '
                 f'{machine.get("cpus", "?")}-core {machine.get("kind", "machine")}, '
                 f'{results.get("date", "")}', fontsize=13)
    panels = [('latency', _latency_panels, (axes[0][0], axes[0][1])),
              ('faults', _faults_panel, (axes[0][2],)),
              ('recovery', _recovery_panel, (axes[1][0],)),
              ('scale', _scale_panels, (axes[1][1], axes[1][2]))]
    for section, draw, where in panels:
        if results.get(section):
            draw(*where, results[section])
        else:
            for ax in where:
                ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
