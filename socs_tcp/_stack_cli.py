"""``socs-tcp stack``: a local OCS stack to try any agent in, without Docker.

Starts crossbar on a free 127.0.0.1 port with a crossbar config today's
crossbar accepts, writes a site config (``<workdir>/config/default.yaml``)
whose hub is that crossbar, optionally starts simulated devices, prints
``OCS_CONFIG_DIR=...`` and how to launch an agent into the stack, and runs
until Ctrl-C (or SIGTERM), when it stops everything it started.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from collections.abc import Sequence

from socs_tcp._workdir import WorkdirError, usable_workdir
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
                        help='add an agent instance to the site config (repeatable), e.g. '
                             '"psu-1 PowerSupplyAgent --ip-address 127.0.0.1 --port 5025"')
    parser.add_argument('--simulate', action='append', default=[], metavar='KIND',
                        help='also start a simulated device (repeatable; kinds: socs-tcp simulate --help)')
    return parser


def _instructions(stack: OcsStack, simulators) -> str:
    config = stack.config_dir
    cb = stack.crossbar
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
              '  socs-tcp agent --instance-id INSTANCE_ID      # SOCS agents, on socs_tcp',
              '  ocs-agent-cli --instance-id INSTANCE_ID       # or as OCS launches them',
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
        workdir = usable_workdir(args.workdir)
    except WorkdirError as exc:
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
        for instance_id, agent_class, arguments in args.instance:
            stack.add_agent(instance_id, agent_class, arguments)
        stack.start_crossbar(args.port or None, wait=False)
        simulators = [stack.start_simulator(kind) for kind in args.simulate]
        stack.crossbar.wait_ready()
        print(_instructions(stack, simulators), flush=True)
        while stack.crossbar.process.running:
            time.sleep(0.2)
        print(f'{PROG}: crossbar exited (status {stack.crossbar.process.returncode}); '
              f'see {stack.crossbar.process.log_path}', file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, _Stop):
        pass
    except (CrossbarError, StackError, FileNotFoundError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f'{PROG}: {first} (logs in {stack.log_dir})', file=sys.stderr)
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
