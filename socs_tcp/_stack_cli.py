"""``socs-tcp stack``: a local OCS stack to try any agent in, without Docker.

Starts crossbar on a free 127.0.0.1 port with a crossbar config today's
crossbar accepts, writes a site config (``<workdir>/config/default.yaml``)
whose hub is that crossbar, optionally starts simulated devices, prints
``OCS_CONFIG_DIR=...`` and how to launch an agent into the stack, and runs
until Ctrl-C (or SIGTERM), when it stops everything it started.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence

from socs_tcp._workdir import WorkdirError, usable_workdir
from socs_tcp.sim.cli import DEVICES
from socs_tcp.testing import CrossbarError, OcsStack, SiteConfig, StackError
from socs_tcp.testing._site import AgentInstance

PROG = 'socs-tcp stack'


class _Stop(Exception):
    """SIGTERM arrived: stop as on Ctrl-C."""


def _instance(text: str) -> tuple[str, str, list[str]]:
    parts = shlex.split(text)
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f'{text!r}: give "INSTANCE_ID AGENT_CLASS [ARGUMENT ...]"')
    return parts[0], parts[1], parts[2:]


#: ``{KIND}`` in an ``--instance`` argument: the device port of ``--simulate KIND``.
_PORT_OF = re.compile(r'\{([A-Za-z0-9_-]+)\}')


def _check_ports(instances: Sequence[tuple[str, str, list[str]]], kinds: Sequence[str]) -> None:
    """Refuse a ``{KIND}`` no ``--simulate KIND`` will fill, before anything is started."""
    for instance_id, _, arguments in instances:
        for argument in arguments:
            for name in _PORT_OF.findall(argument):
                if name not in kinds:
                    given = ', '.join(sorted(set(kinds))) or 'none'
                    raise ValueError(f'--instance {instance_id}: {{{name}}} stands for the port of '
                                     f'--simulate {name}, which is not given (--simulate: {given})')


def _fill_ports(arguments: Sequence[str], ports: dict[str, int]) -> list[str]:
    """``arguments`` with each ``{KIND}`` replaced by that simulator's device port."""
    return [_PORT_OF.sub(lambda m: str(ports[m.group(1)]), argument) for argument in arguments]


def _numbered(kinds: Sequence[str]) -> list[tuple[int, str]]:
    """``(n, kind)``: n counts the kind's occurrences so far (1 for its first)."""
    seen: dict[str, int] = {}
    numbered = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        numbered.append((seen[kind], kind))
    return numbered


def load_site_file(path: str) -> SiteConfig:
    """A site config to run as it is, on this machine's crossbar.

    Realm, address root, host blocks and agent instances (with their
    arguments, device addresses included) are kept; the hub URLs are replaced
    by the local crossbar's when the stack writes the file. Unlike a test's
    ``OcsStack.load_site_config``, agents may talk to devices anywhere.

    Raises
    ------
    ValueError
        If the file cannot be read or is not a site config (the message names it).
    """
    import yaml

    try:
        data = yaml.safe_load(open(path).read())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f'--site-file {path}: {str(exc).splitlines()[0]}') from None
    if not isinstance(data, dict) or not isinstance(data.get('hub'), dict) or \
            not isinstance(data.get('hosts'), dict):
        raise ValueError(f'--site-file {path}: not an OCS site config (it needs "hub" and "hosts")')
    hub = data['hub']
    site = SiteConfig(realm=hub.get('wamp_realm', 'test_realm'),
                      address_root=hub.get('address_root', 'observatory'))
    site.hosts = {}
    for host, block in data['hosts'].items():
        block = dict(block or {})
        entries = block.pop('agent-instances', None) or []
        for key in ('wamp_server', 'wamp_http', 'wamp_realm'):   # the hub is the local crossbar
            block.pop(key, None)
        site.hosts[host] = block
        for entry in entries:
            entry = dict(entry)
            try:
                inst = AgentInstance(entry.pop('instance-id'), entry.pop('agent-class'),
                                     entry.pop('arguments', None) or [], host)
            except KeyError as exc:
                raise ValueError(f'--site-file {path}: an instance under {host!r} has no {exc}') from None
            inst.extra = entry
            site.instances[inst.instance_id] = inst
    return site


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Run crossbar on 127.0.0.1 with a site config for it, print OCS_CONFIG_DIR and '
                    'how to launch agents into it, and stop everything started here on Ctrl-C.')
    parser.add_argument('--port', type=int, default=0,
                        help="crossbar's port (default: a free one)")
    parser.add_argument('--workdir', default=None,
                        help='directory for the site config (config/), crossbar dir and logs '
                             '(default: a new temporary directory)')
    parser.add_argument('--site-file', default=None,
                        help='start from this site config (realm, address root, agent instances); '
                             'its hub is replaced by the local crossbar')
    parser.add_argument('--instance', type=_instance, action='append', default=[],
                        metavar='"ID CLASS [ARG ...]"',
                        help='add an agent instance to the site config (repeatable); {KIND} in '
                             'its arguments is the device port of --simulate KIND, e.g. '
                             '"psu-1 PowerSupplyAgent --ip-address 127.0.0.1 --port {psu}"')
    # Checked here, before crossbar starts; replay needs a recording, which --simulate cannot pass.
    kinds = sorted(kind for kind in DEVICES if kind != 'replay')
    parser.add_argument('--simulate', action='append', default=[], metavar='KIND', choices=kinds,
                        help=f'also start a simulated device (repeatable): {", ".join(kinds)} '
                             '(their commands: socs-tcp simulate --help)')
    return parser


def _instructions(stack: OcsStack, simulators) -> str:
    config = stack.config_dir
    cb = stack.crossbar
    assert cb is not None   # started by then
    lines = [f'OCS_CONFIG_DIR={config}', '',
             f'crossbar   {cb.wamp_server} (realm {stack.site.realm}, address root '
             f'{stack.site.address_root}), pid {cb.process.pid}',
             f'site file  {stack.site_file} (agent instances under hosts: localhost:)',
             f'logs       {stack.log_dir}']
    for sim in simulators:
        lines.append(f'simulator  {sim.kind} on 127.0.0.1:{sim.port} (fault control: {sim.control_port})')
    ids = ', '.join(f'{i.instance_id} (--site-host {i.host})' if i.host != 'localhost' else i.instance_id
                    for i in stack.site.instances.values())
    ids = ids or 'none yet: add them to the site file, or use --instance'
    lines += ['', f'agent instances: {ids}', '',
              'Launch an agent into this stack, in another terminal:',
              f'  export OCS_CONFIG_DIR={config}',
              '  socs-tcp agent --instance-id INSTANCE_ID      # a SOCS agent, on socs_tcp (needs socs)',
              '  ocs-agent-cli --instance-id INSTANCE_ID       # any other (the sample agents, yours)',
              'and talk to it:',
              '  python -c "from ocs.ocs_client import OCSClient; '
              "print(OCSClient('INSTANCE_ID').acq.status())\"",
              '',
              'Ctrl-C stops crossbar and the simulators started here; stop your agents yourself.']
    return '\n'.join(lines)


def _on_sigterm(signum, frame):
    raise _Stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack until Ctrl-C; 0 after a clean stop, 1 if crossbar died, 2 on bad input."""
    args = make_parser().parse_args(argv)
    try:
        _check_ports(args.instance, args.simulate)
        workdir = usable_workdir(args.workdir)
    except (ValueError, WorkdirError) as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 2
    stack = OcsStack(workdir)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C stops the stack even when started where SIGINT was ignored (a shell's `cmd &`).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    status = 0
    try:
        if args.site_file:
            stack.site = load_site_file(args.site_file)
        stack.start_crossbar(args.port or None, wait=False)
        # The same kind twice is two devices: psu-sim, psu-sim-2, ...
        simulators = [stack.start_simulator(kind, f'{kind}-sim-{n}' if n > 1 else None)
                      for n, kind in _numbered(args.simulate)]
        ports: dict[str, int] = {}
        for sim in simulators:
            ports.setdefault(sim.kind, sim.port)     # {KIND}: the first --simulate KIND
        for instance_id, agent_class, arguments in args.instance:
            stack.add_agent(instance_id, agent_class, _fill_ports(arguments, ports))
        crossbar = stack.crossbar
        assert crossbar is not None   # start_crossbar() above
        crossbar.wait_ready()
        print(_instructions(stack, simulators), flush=True)
        while crossbar.process.running:
            time.sleep(0.2)
        print(f'{PROG}: crossbar exited (status {crossbar.process.returncode}); '
              f'see {crossbar.process.log_path}', file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, _Stop):
        pass
    except (CrossbarError, StackError, FileNotFoundError, OSError, ValueError) as exc:
        # The first line only (a log's tail may follow it); point at the logs unless it names one.
        first = str(exc).splitlines()[0].rstrip(' :') if str(exc) else type(exc).__name__
        where = '' if str(stack.log_dir) in first else f' (logs in {stack.log_dir})'
        print(f'{PROG}: {first}{where}', file=sys.stderr)
        status = 1 if isinstance(exc, CrossbarError | StackError) else 2
    finally:
        # A second SIGTERM must not cut the stop short (the children have process groups of
        # their own: nothing else would stop them); another Ctrl-C hurries it (see stop_processes).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        records = stack.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    stopped = ', '.join(f'{r.name} (pid {r.pid})' for r in records)
    print(f'{PROG}: stopped {stopped or "nothing"}', flush=True)
    return status
