"""What a client sees of the running deployment: the checks of docker/ci-up.sh.

Usage::

    probe.py plan COMPOSE_CONFIG
    probe.py feeds --router URL --realm R --address-root A --instance ID [--instance ID ...]
    probe.py acq --instance ID [--instance ID ...]
    probe.py fault --instance ID --control HOST:PORT

``plan`` reads the merged compose config (``docker compose config``) and
prints what the script checks, one item a line::

    port SERVICE HOST:PORT                 (every published port)
    base IMAGE                             (every image the deployment needs from a registry)
    hub REALM ADDRESS_ROOT HOST_URL NETWORK_URL IMAGE
    agent SERVICE INSTANCE_ID DEVICE_SERVICE CONTROL
    launcher SERVICE INSTANCE_ID socs-tcp-agent|socs-tcp-env

A ``base`` is the FROM of a service's Dockerfile (its ARG defaults and the
service's build args filled in), or the image of a service that is not
built; images the deployment builds itself are not bases. HOST_URL is the
site config's wamp_server (crossbar's published port), NETWORK_URL the
agents' SITE_HUB (crossbar inside the compose network), IMAGE the agents'
image (it runs the in-network client). CONTROL is the host address of the
agent's device simulator's published fault-control port, or ``-`` when it
has none. A ``launcher`` line names an agent whose entrypoint (the
service's, else its Dockerfile's) is ``socs-tcp agent``: an unchanged SOCS
agent, whose log must say it runs on socs_tcp; ``socs-tcp-env`` names an
agent launched by any entrypoint with ``SOCS_TCP`` set (not ``0``) in its
environment, whose log must say which SOCS transports socs_tcp took over.
The shell script drives
everything else from these lines, so a compose file that adds agents (or a
second file layered on top) is checked without changing the script.

``feeds`` subscribes to ``<address-root>.<instance>.feeds.*`` on a WAMP
router and succeeds once every instance has published a feed message with
data. ci-up.sh runs it twice: in a container on the compose network
(``ws://crossbar:8001/ws``) and on the host through the published port.

``acq`` uses ``OCSClient`` (site config from ``OCS_CONFIG_DIR``) and
succeeds once each instance's ``acq`` runs, is not degraded, and, where its
session.data keeps readings (the sample agents do), holds two successive
readings from a connected device.

``fault`` stops the device through its simulator's control port (``stop``),
waits until the agent's ``acq`` is degraded and reports the device
unreachable while still running, then starts it again (``start``) and waits
until ``degraded`` clears and new readings arrive.

Every subcommand prints what it saw and its timing on stdout, and exits 1
with the reason on stderr. Runs on Python >= 3.10 (the OCS images' Python).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

# -- plan ------------------------------------------------------------------


def _environment(service: dict) -> dict[str, str]:
    env = service.get('environment') or {}
    if isinstance(env, list):
        env = dict(item.split('=', 1) for item in env if '=' in item)
    return {k: str(v) for k, v in env.items()}


def _option(argv: list[str], name: str) -> str | None:
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    return None


def _published(service: dict, container_port: str) -> str | None:
    """The host address (host:port) a container port is published on.

    Compose v1 prints ports in the short form (``127.0.0.1:7020:7020``),
    v2 in the long form (a mapping with host_ip, published and target).
    """
    for port in service.get('ports') or []:
        if isinstance(port, dict):
            if str(port.get('target')) == container_port and port.get('published'):
                return f"{port.get('host_ip') or '127.0.0.1'}:{port['published']}"
        else:
            parts = str(port).split('/')[0].split(':')
            if parts[-1] == container_port and len(parts) >= 2:
                host = parts[0] if len(parts) == 3 else '127.0.0.1'
                return f'{host}:{parts[-2]}'
    return None


def _mounted_at(service: dict, target: str, base: str) -> str | None:
    """The host path mounted at ``target`` (v1: 'src:dst:mode' strings, v2: mappings).

    ``compose config`` prints absolute paths; a relative one (a compose file
    read as written) is relative to ``base``, the compose file's folder.
    """
    for volume in service.get('volumes') or []:
        if isinstance(volume, dict):
            source = volume.get('source') if volume.get('target') == target else None
        else:
            parts = str(volume).split(':')
            source = parts[0] if len(parts) >= 2 and parts[1] == target else None
        if source:
            return os.path.normpath(os.path.join(base, source))
    return None


def _site_config(config_dir: str) -> dict:
    import yaml
    with open(os.path.join(config_dir, 'default.yaml')) as f:
        return yaml.safe_load(f)


def _site_hub(config_dir: str) -> dict[str, str]:
    """The site config's hub block: wamp_server, wamp_realm, address_root, ..."""
    return {k: str(v) for k, v in (_site_config(config_dir).get('hub') or {}).items()}


def _site_instances(config_dir: str) -> dict[tuple[str, str], list[str]]:
    """(host block, instance-id) -> flattened arguments, from default.yaml."""
    site = _site_config(config_dir)
    out: dict[tuple[str, str], list[str]] = {}
    for host, block in (site.get('hosts') or {}).items():
        for inst in (block or {}).get('agent-instances', []):
            out[(host, inst['instance-id'])] = _flatten(inst.get('arguments', []))
    return out


def _flatten(items: list) -> list[str]:
    """Instance arguments flattened the way ocs.site_config does."""
    flat: list[str] = []
    for item in items:
        flat.extend(_flatten(item) if isinstance(item, (list, tuple)) else [str(item)])
    return flat


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs of a Dockerfile: continuations joined, comments dropped."""
    out = []
    for line in text.replace('\\\n', ' ').splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            word, _, rest = line.partition(' ')
            out.append((word.upper(), rest.strip()))
    return out


def _build_args(build: dict) -> dict[str, str]:
    """A service's build args (compose allows a list or a map)."""
    raw = build.get('args') or {}
    if isinstance(raw, list):
        raw = dict(item.split('=', 1) for item in raw if '=' in item)
    return {k: str(v) for k, v in raw.items() if v is not None}


def _dockerfile(svc: dict, base: str) -> str | None:
    """The path of a built service's Dockerfile (None when it is not built)."""
    build = svc.get('build')
    if not build:
        return None
    if isinstance(build, str):
        build = {'context': build}
    context = os.path.join(base, str(build.get('context', '.')))
    return os.path.normpath(os.path.join(context, str(build.get('dockerfile', 'Dockerfile'))))


def _dockerfile_facts(path: str, build_args: dict[str, str]) -> tuple[list[str], list[str]]:
    """(base images, final ENTRYPOINT) of a Dockerfile.

    Base images are the FROM references that are not earlier stages, with
    the global ARG defaults (those before the first FROM) and ``build_args``
    filled in. The ENTRYPOINT is the last one (the final stage's, as the
    Dockerfiles here have it), in exec form; [] when there is none.
    """
    with open(path) as f:
        instructions = _dockerfile_instructions(f.read())
    values: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    entrypoint: list[str] = []
    seen_from = False

    def fill(text: str) -> str:
        return re.sub(r'\$\{?(\w+)\}?', lambda m: values.get(m.group(1), m.group(0)), text)
    for word, rest in instructions:
        if word == 'ARG' and not seen_from:
            name, eq, default = rest.partition('=')
            values[name.strip()] = build_args.get(name.strip(), default.strip() if eq else '')
        elif word == 'FROM':
            seen_from = True
            words = [w for w in rest.split() if not w.startswith('--')]
            image = fill(words[0])
            if image not in stages and image not in bases:
                bases.append(image)
            if len(words) == 3 and words[1].lower() == 'as':
                stages.add(words[2])
        elif word == 'ENTRYPOINT':
            entrypoint = json.loads(rest) if rest.startswith('[') else ['/bin/sh', '-c', rest]
    return bases, entrypoint


def _runs_socs_tcp_agent(entrypoint: list[str]) -> bool:
    """True if ``entrypoint`` runs ``socs-tcp agent`` (under dumb-init or not)."""
    words = [os.path.basename(str(w)) for w in entrypoint]
    return any(words[i:i + 2] == ['socs-tcp', 'agent'] for i in range(len(words)))


def plan(args: argparse.Namespace) -> int:
    import yaml
    with open(args.compose_config) as f:
        compose = yaml.safe_load(f)
    services = compose.get('services') or {}
    base = os.path.dirname(os.path.abspath(args.compose_config))
    for name, svc in sorted(services.items()):
        for port in svc.get('ports') or []:
            target = str(port.get('target')) if isinstance(port, dict) else str(port).split(':')[-1]
            address = _published(svc, target.split('/')[0])
            if address:
                print(f'port {name} {address}')
    # What must come from a registry (pulled, or a stand-in built under its name).
    built = {svc.get('image') for svc in services.values() if svc.get('build')}
    entrypoints: dict[str, list[str]] = {}
    needed: list[str] = []
    for name, svc in sorted(services.items()):
        dockerfile = _dockerfile(svc, base)
        images: list[str] = [svc['image']] if svc.get('image') and not dockerfile else []
        entrypoint = svc.get('entrypoint') or []
        entrypoints[name] = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
        if dockerfile:
            if not os.path.isfile(dockerfile):
                print(f'{name}: its Dockerfile {dockerfile} does not exist', file=sys.stderr)
                return 1
            build = svc['build'] if isinstance(svc['build'], dict) else {}
            images, from_file = _dockerfile_facts(dockerfile, _build_args(build))
            entrypoints[name] = entrypoints[name] or from_file
        needed += [image for image in images if image not in built and image not in needed]
    for image in needed:
        print(f'base {image}')
    agents = {name: svc for name, svc in services.items() if 'INSTANCE_ID' in _environment(svc)}
    if not agents:
        print(f'no agent services (none sets INSTANCE_ID) in {args.compose_config}', file=sys.stderr)
        return 1
    # How clients reach crossbar: the site config's hub block from the host,
    # the agents' SITE_HUB inside the compose network (same for all agents).
    first = agents[sorted(agents)[0]]
    config_dir = _mounted_at(first, '/config', base)
    if not config_dir:
        print(f'{sorted(agents)[0]}: no site config mounted at /config', file=sys.stderr)
        return 1
    hub = _site_hub(config_dir)
    print(f"hub {hub['wamp_realm']} {hub['address_root']} {hub['wamp_server']} "
          f"{_environment(first).get('SITE_HUB', hub['wamp_server'])} {first['image']}")
    for name, svc in sorted(agents.items()):
        env = _environment(svc)
        config_dir = _mounted_at(svc, '/config', base)
        device, control = '-', '-'
        if config_dir:
            argv = _site_instances(config_dir).get((svc.get('hostname', ''), env['INSTANCE_ID']), [])
            host = _option(argv, '--ip-address')
            if host in services:
                device = host
                ctl = _option(services[host].get('entrypoint') or [], '--control-port')
                control = (_published(services[host], ctl) if ctl else None) or '-'
        print(f"agent {name} {env['INSTANCE_ID']} {device} {control}")
    for name, svc in sorted(agents.items()):
        env = _environment(svc)
        if _runs_socs_tcp_agent(entrypoints[name]):
            print(f"launcher {name} {env['INSTANCE_ID']} socs-tcp-agent")
        elif env.get('SOCS_TCP', '').strip() not in ('', '0'):
            print(f"launcher {name} {env['INSTANCE_ID']} socs-tcp-env")
    return 0


# -- polling -----------------------------------------------------------------


class ProbeFailed(Exception):
    """A check did not pass; the message says what was seen."""


def _until(what: str, timeout: float, probe: Callable[[], Any], interval: float = 0.5) -> tuple[Any, float]:
    """Call ``probe`` until it returns something truthy; return (it, seconds taken).

    Exceptions from ``probe`` count as "not yet" until the deadline; then the
    last one (or the last value) is the reason given.
    """
    start = time.monotonic()
    last: Any = None
    while True:
        try:
            value = probe()
            if value:
                return value, time.monotonic() - start
            last = value
        except Exception as exc:  # noqa: BLE001 - any failure is "not yet"; reported at the deadline
            last = f'{type(exc).__name__}: {exc}'
        if time.monotonic() - start > timeout:
            raise ProbeFailed(f'{what}: not within {timeout:g} s; last seen: {last}')
        time.sleep(interval)


# -- acq, through OCSClient ------------------------------------------------------


def _client(instance: str, timeout: float):
    from ocs.ocs_client import OCSClient
    client, took = _until(f'{instance}: OCSClient', timeout, lambda: OCSClient(instance))
    return client


def _session(client) -> dict:
    return client.acq.status().session


def _healthy_reading(session: dict, after: float | None) -> dict | None:
    """session.data when acq runs and is not degraded, with fresh connected readings.

    The sample agents keep ``connected``, ``fields`` and ``timestamp`` in
    session.data and those are checked when present (readings newer than
    ``after``). A SOCS agent's acq may keep nothing there: then running and
    not degraded is what the session can tell (its feed is checked apart).
    The returned dict is never empty, so it is truthy.
    """
    data = session.get('data') or {}
    if session.get('status') != 'running' or session.get('degraded'):
        return None
    if 'connected' in data and not data['connected']:
        return None
    if 'timestamp' in data:
        stamp = data['timestamp']
        if stamp is None or (after is not None and stamp <= after) or not data.get('fields', True):
            return None
    return data or {'status': 'running'}


def _degraded(session: dict) -> dict | None:
    """The session when acq still runs but is degraded (and, if it says, not connected)."""
    data = session.get('data') or {}
    if session.get('status') == 'running' and session.get('degraded') and data.get('connected') is not True:
        return session
    return None


def _brief(session: dict) -> str:
    data = session.get('data') or {}
    return (f"status={session.get('status')} degraded={session.get('degraded')} "
            f"connected={data.get('connected')} timestamp={data.get('timestamp')} "
            f"last_error={data.get('last_error')!r} outages={data.get('outages')}")


def _wait_healthy(client, instance: str, timeout: float, after: float | None = None) -> tuple[dict, float]:
    last: dict = {}

    def probe():
        last['s'] = _session(client)
        return _healthy_reading(last['s'], after)
    try:
        return _until(f'{instance}: healthy acq readings', timeout, probe)
    except ProbeFailed as exc:
        raise ProbeFailed(f"{exc} ({_brief(last.get('s') or {})})") from None


def acq(args: argparse.Namespace) -> int:
    for instance in args.instance:
        client = _client(instance, args.timeout)
        first, t1 = _wait_healthy(client, instance, args.timeout)
        if 'timestamp' not in first:
            print(f'acq {instance}: running, not degraded (its session.data holds no readings) [{t1:.1f} s]')
            continue
        later, t2 = _wait_healthy(client, instance, args.timeout, after=first['timestamp'])
        numbers = {k: v for k, v in (later.get('fields') or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if 'fields' in later and not numbers:
            raise ProbeFailed(f"{instance}: no numeric readings in {later['fields']}")
        shown = ', '.join(f'{k}={v:g}' for k, v in sorted(numbers.items())[:4])
        print(f'acq {instance}: running, not degraded, readings advance '
              f"({later['timestamp'] - first['timestamp']:.1f} s apart; {shown}, ...) "
              f'[{t1 + t2:.1f} s]')
    return 0


# -- fault, through the simulator's control port -------------------------------


def control(address: str, command: str, timeout: float = 5.0) -> str:
    """Send one command to a simulator's control channel; return its ``OK`` answer.

    Runs on the host, whose venv has socs_tcp: its ``SimControl`` speaks the channel.
    """
    from socs_tcp.sim.control import SimControl, SimControlError
    host, _, port = address.rpartition(':')
    try:
        return f'OK {SimControl(host, int(port), timeout).send(command)}'.strip()
    except (SimControlError, ConnectionError) as exc:
        raise ProbeFailed(f'control {address}: {command!r}: {exc}') from None


def fault(args: argparse.Namespace) -> int:
    instance = args.instance[0]
    client = _client(instance, args.timeout)
    before, _ = _wait_healthy(client, instance, args.timeout)
    outages = before.get('outages') or 0
    print(f'fault {instance}: {control(args.control, "stop")} (device stopped via {args.control})')
    stopped_at = time.time()
    try:
        session, took = _until(f'{instance}: acq degraded after the device stopped', args.timeout,
                               lambda: _degraded(_session(client)))
        data = session.get('data') or {}
        said = (f"last_error={data['last_error']!r}" if 'last_error' in data
                else 'its session.data holds no error; the agent logs it')
        print(f'fault {instance}: acq degraded after {took:.1f} s, still running ({said})')
        # It stays degraded (and running) while the device is away.
        time.sleep(args.hold)
        session = _session(client)
        if not (session.get('degraded') and session.get('status') == 'running'):
            raise ProbeFailed(f'{instance}: device still stopped but acq is {_brief(session)}')
    finally:
        answer = control(args.control, 'start')
    print(f'fault {instance}: {answer} (device started)')
    started_at = time.time()
    data, took = _wait_healthy(client, instance, args.timeout, after=started_at)
    counted = ''
    if 'outages' in data:
        if (data['outages'] or 0) <= outages:
            raise ProbeFailed(f"{instance}: recovered but outages={data['outages']} (was {outages})")
        counted = f" counted: outages={data['outages']}"
    outage = f'outage of {started_at - stopped_at:.1f} s{counted}'
    if 'timestamp' in data:
        print(f'fault {instance}: degraded cleared, readings again after {took:.1f} s ({outage})')
    else:
        print(f'fault {instance}: degraded cleared after {took:.1f} s, acq still running ({outage}; '
              'its session.data holds no readings)')
    return 0


# -- feeds, through a WAMP router ------------------------------------------------


def _import_autobahn_serializers() -> None:
    """Import autobahn's serializers now, keeping one known harmless message short.

    A ``bjdata`` wheel built against NumPy 1.x prints a long traceback under
    NumPy 2 on import (autobahn then goes without its optional UBJSON
    serializer). Anything else written while importing is shown as is.
    """
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        import autobahn.wamp.serializer  # noqa: F401
    text = buf.getvalue()
    if '_ARRAY_API not found' in text:
        print('probe: note: bjdata here is built against another NumPy; autobahn runs without '
              'its UBJSON serializer (harmless)', file=sys.stderr)
    elif text:
        sys.stderr.write(text)


def _log_warnings_to_stderr() -> None:
    """Twisted/autobahn warnings and errors to stderr; stdout stays the probe's own."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def feeds(args: argparse.Namespace) -> int:
    import txaio
    txaio.use_twisted()   # before autobahn's serializers bind txaio's clock
    _import_autobahn_serializers()
    from autobahn.twisted.wamp import ApplicationRunner, ApplicationSession
    from autobahn.wamp.types import SubscribeOptions
    from twisted.internet import defer, reactor
    _log_warnings_to_stderr()

    want = set(args.instance)
    seen: dict[str, str] = {}
    outcome: dict[str, str] = {}
    joined: dict[str, ApplicationSession] = {}
    start = time.monotonic()

    def finish(reason: str) -> None:
        """Record the outcome ('' for success) once, and leave; the reactor stops after."""
        if 'reason' in outcome:
            return
        outcome['reason'] = reason
        session = joined.get('session')
        if session is not None and session.is_connected():
            session.leave()
            reactor.callLater(5, _stop)   # in case the goodbye never completes
        else:
            _stop()

    def _stop() -> None:
        # reactor.running stays true until shutdown ends: stop once.
        if reactor.running and not outcome.get('stopping'):
            outcome['stopping'] = 'yes'
            reactor.stop()

    class FeedProbe(ApplicationSession):
        @defer.inlineCallbacks
        def onJoin(self, details):
            joined['session'] = self
            for instance in sorted(want):
                prefix = f'{args.address_root}.{instance}.feeds.'
                yield self.subscribe(self._handler(instance), prefix,
                                     options=SubscribeOptions(match='prefix', details=True))

        def _handler(self, instance: str) -> Callable[..., None]:
            def handler(*payload, details=None):
                on_event(instance, *payload, details=details)
            return handler

        def onDisconnect(self):
            finish('feeds: disconnected from the router before every feed was seen')
            _stop()

    def on_event(instance: str, *payload, details=None) -> None:
        # OCS publishes one argument, [blocks, feed info] (see ocs.ocs_feed.Feed);
        # a block holds 'data': {field: [values]}.
        message = payload[0] if payload else None
        blocks = message[0] if isinstance(message, (list, tuple)) and message else None
        if not isinstance(blocks, dict) or not blocks or instance in seen:
            return
        fields = sorted({f for b in blocks.values() if isinstance(b, dict) for f in (b.get('data') or {})})
        if not fields:
            return
        seen[instance] = (f'{details.topic if details else "?"} ({len(fields)} fields: '
                          f'{", ".join(fields[:3])}, ...) after {time.monotonic() - start:.1f} s')
        if want <= set(seen):
            finish('')

    def timed_out() -> None:
        if 'session' not in joined:
            finish(f'feeds: could not join realm {args.realm} at {args.router} within {args.timeout:g} s')
        else:
            finish(f'feeds: no message within {args.timeout:g} s from {sorted(want - set(seen))}')

    def connect_failed(failure) -> None:
        finish(f'feeds: cannot connect to {args.router}: {failure.getErrorMessage()}')

    reactor.callLater(args.timeout, timed_out)
    runner = ApplicationRunner(args.router, args.realm)
    runner.run(FeedProbe, start_reactor=False, auto_reconnect=False).addErrback(connect_failed)
    reactor.run()
    for instance in sorted(seen):
        print(f'feed {instance} via {args.router}: {seen[instance]}')
    reason = outcome.get('reason', 'feeds: the reactor stopped before an outcome')
    if reason:
        raise ProbeFailed(reason)
    return 0


# -- command line ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('plan')
    p.add_argument('compose_config')
    p.set_defaults(func=plan)
    for name, func in (('feeds', feeds), ('acq', acq), ('fault', fault)):
        p = sub.add_parser(name)
        p.add_argument('--instance', action='append', required=True)
        p.add_argument('--timeout', type=float, default=60.0, help='seconds per wait')
        p.set_defaults(func=func)
        if name == 'feeds':
            p.add_argument('--router', required=True)
            p.add_argument('--realm', required=True)
            p.add_argument('--address-root', required=True)
        if name == 'fault':
            p.add_argument('--control', required=True, help='HOST:PORT of the fault-control port')
            p.add_argument('--hold', type=float, default=3.0, help='seconds to stay degraded')
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ProbeFailed as exc:
        print(f'probe {args.command}: FAILED: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
