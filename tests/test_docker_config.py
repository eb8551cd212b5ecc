"""The docker deployment (docker/) is valid and agrees with itself.

Everything that can be checked without a Docker engine is checked here: the
compose file validates with ``docker-compose config``, the compose services
and the site config name the same instances, hosts and ports, the images are
pinned, ports are published on loopback only, the build context the
Dockerfile sees installs a package whose entry points resolve, and the stand-in
images and the check script (docker/standins/, docker/ci/) follow OCS's
recipes and read the deployment right. The topology runs as plain processes in
``test_docker_topology.py``; that, and crossbar itself checking the stand-in's
fixed config template, are in the slow tier (``make test-slow``).

The deployment is two compose files: the sample agents
(``docker-compose.yml``) and, layered on top, a SOCS agent run unchanged by
``socs-tcp agent`` in SOCS's image with socs_tcp added
(``docker-compose.socs.yml``, ``socs-on-socs-tcp.Dockerfile``); one site
config serves both, so most checks here read the two files merged.

The deployment itself is brought up for real by ``docker/ci-up.sh`` (CI runs
it after this suite; ``make compose-check`` as root). The last test here runs
it against an engine that is already reachable, and skips, saying so, when
there is none.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / 'docker'
COMPOSE_FILE = DOCKER / 'docker-compose.yml'
SOCS_COMPOSE_FILE = DOCKER / 'docker-compose.socs.yml'
#: The whole deployment, in the order compose layers them (ci-up.sh's default).
COMPOSE_FILES = (COMPOSE_FILE, SOCS_COMPOSE_FILE)
SITE_CONFIG = DOCKER / 'config' / 'default.yaml'
DOCKERFILE = DOCKER / 'Dockerfile'
SOCS_DOCKERFILE = DOCKER / 'socs-on-socs-tcp.Dockerfile'
PROLOGIX_PORT = 1234        # socs.common.prologix_interface connects there, always
DOCKERIGNORE = ROOT / '.dockerignore'

# The OCS images run Python 3.10 (Ubuntu 22.04) up to v0.12.x.
IMAGE_PYTHON = (3, 10)


# -- reading the deployment --------------------------------------------------

def load_compose(files: tuple[Path, ...] = COMPOSE_FILES) -> dict:
    """The compose files merged as compose does here: later files add services.

    The second file only adds services (compose would merge a service named
    in both key by key); that is asserted, so this union is the merged config.
    """
    merged: dict = {'services': {}}
    for path in files:
        doc = yaml.safe_load(path.read_text())
        services = doc.get('services') or {}
        again = set(services) & set(merged['services'])
        assert not again, f'{path.name} redefines {sorted(again)}: merge them key by key here too'
        merged['services'].update(services)
    return merged


def load_site_config() -> dict:
    return yaml.safe_load(SITE_CONFIG.read_text())


def environment(service: dict) -> dict[str, str]:
    """A service's environment as a dict (compose allows a list or a map)."""
    env = service.get('environment') or {}
    if isinstance(env, list):
        env = dict(item.split('=', 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def flat_arguments(instance: dict) -> list[str]:
    """An instance's arguments flattened the way ocs.site_config does."""
    out: list[str] = []

    def walk(items):
        for item in items:
            if isinstance(item, (list, tuple)):
                walk(item)
            else:
                out.append(str(item))
    walk(instance.get('arguments', []))
    return out


def option(argv: list[str], name: str) -> str | None:
    """The value following ``name`` in ``argv``, or None when absent."""
    if name not in argv:
        return None
    i = argv.index(name)
    return argv[i + 1] if i + 1 < len(argv) else None


def agent_services(compose: dict) -> dict[str, dict]:
    """Services that run an OCS agent (ocs-agent-cli or socs-tcp agent): they set INSTANCE_ID."""
    return {name: svc for name, svc in compose['services'].items()
            if 'INSTANCE_ID' in environment(svc)}


def simulator_services(compose: dict) -> dict[str, dict]:
    """Services whose entry point runs ``socs-tcp simulate``."""
    return {name: svc for name, svc in compose['services'].items()
            if 'simulate' in (svc.get('entrypoint') or [])}


def instance_for(site: dict, host: str, instance_id: str) -> dict | None:
    block = (site.get('hosts') or {}).get(host) or {}
    for inst in block.get('agent-instances', []):
        if inst.get('instance-id') == instance_id:
            return inst
    return None


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r'\\\n', ' ', path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            word, _, rest = line.partition(' ')
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_from(path: Path = DOCKERFILE) -> str:
    """The base image reference with build ARG defaults substituted."""
    args = {}
    for word, rest in dockerfile_instructions(path):
        if word == 'ARG' and '=' in rest:
            k, v = rest.split('=', 1)
            args[k.strip()] = v.strip()
        if word == 'FROM':
            return re.sub(r'\$\{?(\w+)\}?', lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
    raise AssertionError('Dockerfile has no FROM')


# -- the compose file validates -----------------------------------------------

def _compose_config(*paths: Path) -> subprocess.CompletedProcess:
    exe = shutil.which('docker-compose')
    if exe is None:
        pytest.skip("docker-compose (Debian package 'docker-compose', v1) is not installed; "
                    "CI installs it in .ci/run")
    files = [arg for path in paths for arg in ('-f', str(path))]
    return subprocess.run([exe, *files, 'config', '-q'], capture_output=True, text=True, timeout=60)


def test_compose_file_validates():
    # The sample agents alone: a site may run the main file without the SOCS one.
    result = _compose_config(COMPOSE_FILE)
    assert result.returncode == 0, result.stderr


def test_compose_files_validate_layered():
    result = _compose_config(*COMPOSE_FILES)
    assert result.returncode == 0, result.stderr


def test_compose_validation_rejects_a_broken_file(tmp_path):
    # Guards the check above: the validator really parses the file.
    broken = COMPOSE_FILE.read_text().replace('"127.0.0.1:8001:8001"', '"127.0.0.1:8001:80x01"')
    assert broken != COMPOSE_FILE.read_text()
    (tmp_path / 'docker-compose.yml').write_text(broken)
    result = _compose_config(tmp_path / 'docker-compose.yml')
    assert result.returncode != 0
    assert 'ports' in result.stderr


# -- compose services and site config agree -----------------------------------

def test_every_agent_service_has_its_instance_under_its_hostname():
    compose, site = load_compose(), load_site_config()
    agents = agent_services(compose)
    assert set(agents) >= {'compressor-agent', 'psu-agent', 'cpa-agent'}
    for name, svc in agents.items():
        host = svc.get('hostname')
        assert host, f'{name}: no hostname; ocs-agent-cli picks the host block by hostname'
        assert host in site['hosts'], f'{name}: hostname {host!r} has no host block in default.yaml'
        iid = environment(svc)['INSTANCE_ID']
        assert instance_for(site, host, iid) is not None, \
            f'{name}: INSTANCE_ID={iid!r} is not an instance under hosts: {host}'


def test_every_site_config_instance_has_an_agent_service():
    compose, site = load_compose(), load_site_config()
    deployed = {(svc['hostname'], environment(svc)['INSTANCE_ID'])
                for svc in agent_services(compose).values()}
    for host, block in site['hosts'].items():
        for inst in block.get('agent-instances', []):
            assert (host, inst['instance-id']) in deployed, \
                f"{host}/{inst['instance-id']} is configured but no compose service runs it"


def test_agents_point_at_a_simulator_service_and_its_port():
    compose, site = load_compose(), load_site_config()
    sims = simulator_services(compose)
    assert set(sims) == {'compressor-sim', 'psu-sim', 'cpa-sim', 'prologix-sim'}
    for name, svc in agent_services(compose).items():
        inst = instance_for(site, svc['hostname'], environment(svc)['INSTANCE_ID'])
        argv = flat_arguments(inst)
        host, port = option(argv, '--ip-address'), option(argv, '--port')
        assert host in sims, f'{name}: --ip-address {host!r} is not a simulator service {sorted(sims)}'
        sim_port = option(sims[host]['entrypoint'], '--port')
        if port is None and sims[host]['entrypoint'][3] == 'prologix':
            port = str(PROLOGIX_PORT)      # SOCS's Prologix driver has no port option
        assert port == sim_port, f'{name}: --port {port} but {host} listens on {sim_port}'
        # Started only once the device it reads is up.
        assert host in svc.get('depends_on', {}), f'{name} does not depend on {host}'


def test_simulators_listen_where_other_containers_reach_them():
    from socs_tcp.sim.cli import DEVICES
    for name, svc in simulator_services(load_compose()).items():
        argv = svc['entrypoint']
        # 127.0.0.1 inside a container is unreachable from the agents' containers.
        assert option(argv, '--host') == '0.0.0.0', f'{name} must listen on all container interfaces'
        assert argv[:3] == ['dumb-init', 'socs-tcp', 'simulate'], \
            f'{name}: run under dumb-init so `docker compose stop` ends it at once'
        assert argv[3] in DEVICES, f'{name}: unknown device {argv[3]!r}'
        assert option(argv, '--control-port'), f'{name}: no --control-port for fault injection'


def test_simulator_healthchecks_probe_the_device_port():
    for name, svc in simulator_services(load_compose()).items():
        port = option(svc['entrypoint'], '--port')
        probe = ' '.join(svc['healthcheck']['test'])
        assert f"('127.0.0.1', {port})" in probe, f'{name}: healthcheck does not probe port {port}'


def built_from(svc: dict) -> Path:
    """The Dockerfile a service's image is built from (every service here is built but crossbar)."""
    build = svc['build']
    return (DOCKER / build['context'] / build['dockerfile']).resolve()


def agent_plugin(svc: dict) -> str:
    """The OCS plugin module that provides an agent service's agent class.

    SOCS's image (and ours derived from it) runs SOCS's agents; the socs-tcp
    image runs this project's sample agents.
    """
    if dockerfile_from(built_from(svc)).startswith('simonsobs/socs:'):
        return 'socs.plugin'
    return 'socs_tcp.agents.plugin'


def agent_instances() -> list[tuple[str, dict, dict]]:
    """(service name, service, its site config instance) for every agent service."""
    site = load_site_config()
    return [(name, svc, instance_for(site, svc['hostname'], environment(svc)['INSTANCE_ID']))
            for name, svc in sorted(agent_services(load_compose()).items())]


def test_agent_classes_are_registered_plugins():
    for name, svc, inst in agent_instances():
        plugin = importlib.import_module(agent_plugin(svc))
        cls = inst['agent-class']
        assert cls in plugin.agents, f'{name}: {cls} not in {plugin.__name__}.agents'
        module = plugin.agents[cls]['module']
        assert importlib.util.find_spec(module) is not None, f'{cls}: module {module} not found'


def test_socs_agent_class_resolves_to_socs_next_to_socs_tcp(capsys):
    # SOCS's image with socs_tcp added has both plugins, as this environment
    # has: ocs-agent-cli (and so socs-tcp agent) must still find SOCS's agent.
    from ocs.agent_cli import build_agent_list
    found = build_agent_list()
    capsys.readouterr()   # it prints the plugins it loads
    socs_agents = [(name, inst['agent-class']) for name, svc, inst in agent_instances()
                   if agent_plugin(svc) == 'socs.plugin']
    assert socs_agents, 'no SOCS agent in the deployment'
    socs_plugin = importlib.import_module('socs.plugin')
    for name, cls in socs_agents:
        assert found[cls] == socs_plugin.agents[cls], f'{name}: {cls} resolves to {found[cls]}'


def test_instance_arguments_parse_with_the_agents_own_parser(capsys):
    # A bad value would only show as a container in a restart loop.
    from socs_compat_fixtures import forget_socs_modules
    try:
        for name, svc, inst in agent_instances():
            plugin = importlib.import_module(agent_plugin(svc))
            module = importlib.import_module(plugin.agents[inst['agent-class']]['module'])
            where = f"{name} ({inst['instance-id']})"
            try:
                args = module.make_parser().parse_args(flat_arguments(inst))
            except SystemExit:
                pytest.fail(f'{where}: arguments rejected: {capsys.readouterr().err}')
            assert args.mode == 'acq', f'{where}: acq does not start with the container'
    finally:
        # SOCS drivers bind socs.tcp.TCPInterface on import: later tests import them afresh.
        forget_socs_modules()


def test_agents_reach_crossbar_through_the_hub_the_site_config_names():
    compose, site = load_compose(), load_site_config()
    crossbar = compose['services']['crossbar']
    env = environment(crossbar)
    hub = site['hub']
    assert hub['wamp_realm'] == env['OCS_REALM']
    assert hub['address_root'] == env['OCS_ADDRESS_ROOT']
    port = env['OCS_PORT']
    # Clients on the host use the hub block: crossbar's published loopback port.
    assert hub['wamp_server'] == f'ws://127.0.0.1:{port}/ws'
    assert hub['wamp_http'] == f'http://127.0.0.1:{port}/call'
    assert f'127.0.0.1:{port}:{port}' in crossbar['ports']
    for name, svc in agent_services(compose).items():
        aenv = environment(svc)
        assert aenv['SITE_HUB'] == f'ws://crossbar:{port}/ws', name
        assert aenv['SITE_HTTP'] == f'http://crossbar:{port}/call', name
        assert svc['depends_on']['crossbar'] == {'condition': 'service_healthy'}, name


def test_agents_mount_this_site_config_read_only():
    for name, svc in agent_services(load_compose()).items():
        mounts = [v.split(':') for v in svc['volumes']]
        config = [m for m in mounts if m[1] == '/config']
        assert config, f'{name}: site config not mounted at /config'
        src, _, mode = config[0]
        assert (DOCKER / src).resolve() == SITE_CONFIG.parent, f'{name}: mounts {src}, not docker/config'
        assert mode == 'ro', f'{name}: /config must be read-only'


def test_ports_are_published_on_loopback_only():
    published = 0
    for name, svc in load_compose()['services'].items():
        for port in svc.get('ports', []):
            assert isinstance(port, str) and port.startswith('127.0.0.1:'), \
                f'{name}: {port!r} would be reachable from other machines'
            published += 1
    assert published >= 1


def test_every_service_restarts_and_images_are_pinned():
    for name, svc in load_compose()['services'].items():
        assert svc.get('restart') in ('unless-stopped', 'always', 'on-failure'), f'{name}: no restart policy'
        image = svc['image']
        repo, _, tag = image.rpartition(':')
        assert repo and tag and tag != 'latest', f'{name}: image {image!r} is not pinned'


def test_built_images_are_tagged_with_what_they_hold():
    # socs-tcp:<release>; SOCS's image with socs_tcp: socs-on-socs-tcp:<its socs tag>. The
    # version comes from git, so the release is the newest one CHANGELOG.md names
    # ("## Unreleased (X.Y.Z)" or "## X.Y.Z - date").
    release = re.search(r'^## (?:Unreleased \()?(\d+\.\d+\.\d+)', (ROOT / 'CHANGELOG.md').read_text(),
                        re.MULTILINE).group(1)
    built: dict[str, set[Path]] = {}
    for svc in load_compose()['services'].values():
        if 'build' in svc:
            built.setdefault(svc['image'], set()).add(built_from(svc))
    socs_tag = dockerfile_from(SOCS_DOCKERFILE).split(':', 1)[1]
    assert built == {f'socs-tcp:{release}': {DOCKERFILE},
                     f'socs-on-socs-tcp:{socs_tag}': {SOCS_DOCKERFILE}}


def test_crossbar_and_base_image_come_from_one_ocs_release():
    base = dockerfile_from()
    crossbar = load_compose()['services']['crossbar']['image']
    assert base.startswith('simonsobs/ocs:'), base
    assert crossbar.startswith('simonsobs/ocs-crossbar:'), crossbar
    tag = base.split(':', 1)[1]
    assert re.fullmatch(r'v\d+\.\d+\.\d+', tag), f'base image tag {tag!r} is not a release'
    assert crossbar.split(':', 1)[1] == tag


def test_base_image_ocs_satisfies_the_package_requirement():
    from packaging.specifiers import SpecifierSet
    tag = dockerfile_from().split(':', 1)[1].lstrip('v')
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    reqs = [r.strip() for r in cfg['options.extras_require']['agents'].splitlines() if r.strip()]
    ocs_req = next(r for r in reqs if re.match(r'ocs\b', r))
    assert tag in SpecifierSet(ocs_req[3:]), f'image ocs {tag} does not satisfy {ocs_req}'


def test_dockerfile_keeps_the_ocs_entry_point_and_installs_the_package():
    instructions = dockerfile_instructions()
    entry = [rest for word, rest in instructions if word == 'ENTRYPOINT']
    assert entry and yaml.safe_load(entry[-1]) == ['dumb-init', 'ocs-agent-cli']
    runs = ' '.join(rest for word, rest in instructions if word == 'RUN')
    assert re.search(r"pip install [^&]*'\.\[agents\]'", runs), 'the package with its agents extra'
    copies = [rest.split() for word, rest in instructions if word == 'COPY']
    assert any(c[0] == '.' for c in copies), 'the build context is copied in'
    # Leaves the source tree: `import socs_tcp` must find the installed package.
    workdirs = [rest for word, rest in instructions if word == 'WORKDIR']
    assert workdirs[-1] == '/'


# -- the SOCS agent: SOCS's image, socs_tcp added, our launcher --------------------------

def socs_agent_services() -> dict[str, dict]:
    """Agent services whose image is built FROM SOCS's image."""
    return {name: svc for name, svc in agent_services(load_compose()).items()
            if agent_plugin(svc) == 'socs.plugin'}


def test_socs_image_is_socs_own_with_socs_tcp_and_our_launcher_only():
    base = dockerfile_from(SOCS_DOCKERFILE)
    assert re.fullmatch(r'simonsobs/socs:v\d+\.\d+\.\d+', base), f'{base}: not a SOCS release'
    steps = [(word, rest) for word, rest in dockerfile_instructions(SOCS_DOCKERFILE)
             if word not in ('ARG', 'FROM')]
    # Nothing of SOCS is changed: no USER, WORKDIR, ENV, apt or pip of other packages.
    assert steps == [('COPY', '. /app/socs_tcp/'),
                     ('RUN', 'python -m pip install --no-cache-dir /app/socs_tcp && rm -rf /app/socs_tcp'),
                     ('ENTRYPOINT', '["dumb-init", "socs-tcp", "agent"]')]


def test_socs_release_is_one_socs_tcp_compat_was_checked_against():
    from socs_tcp import compat
    tag = dockerfile_from(SOCS_DOCKERFILE).split(':', 1)[1]
    major, minor = (int(n) for n in tag.lstrip('v').split('.')[:2])
    low, high = compat.KNOWN_SOCS
    assert low <= (major, minor) < high, f'socs {tag}: socs-tcp agent would refuse it (KNOWN_SOCS {low}..{high})'


def test_documented_socs_dockerfile_is_the_one_ci_builds():
    # The User Guide's recipe for SOCS sites is this file, so CI proves what it says.
    section = (ROOT / 'docs' / 'user' / 'socs_agents.rst').read_text()
    block = re.search(r'\.\. code-block:: dockerfile\n\n((?:   .*\n)+)', section).group(1)
    ours = [(w, r) for w, r in dockerfile_instructions(SOCS_DOCKERFILE) if w != 'ARG']
    ours[0] = ('FROM', dockerfile_from(SOCS_DOCKERFILE))
    lines = [tuple(line.strip().split(' ', 1)) for line in block.strip().splitlines()]
    assert lines == ours, f'the documented block differs from docker/{SOCS_DOCKERFILE.name}'
    assert f'-f docker/{SOCS_DOCKERFILE.name}' in section


def test_socs_agent_service_changes_only_the_entrypoint():
    agents = socs_agent_services()
    assert set(agents) == {'cpa-agent', 'srs-cg635-agent'}
    for name, svc in agents.items():
        if name == 'srs-cg635-agent':
            continue          # SOCS's own entrypoint, switched by SOCS_TCP=1 (test below)
        assert svc['entrypoint'] == ['dumb-init', 'socs-tcp', 'agent'], name
        # Configured as any OCS agent container: no socs_tcp switches (SOCS_TCP_FORCE,
        # SOCS_TCP_REDIRECT), nothing but the instance and the hub.
        assert set(environment(svc)) == {'INSTANCE_ID', 'SITE_HUB', 'SITE_HTTP'}, name
        assert 'command' not in svc, f'{name}: the arguments come from the site config'


def test_socs_agent_on_socs_own_entrypoint_is_switched_by_socs_tcp_1_only():
    # SOCS's image runs agents with `dumb-init ocs-agent-cli`: the clock agent
    # keeps that, and SOCS_TCP=1 is the one line that differs from a stock
    # SOCS service (no launcher of ours, no SOCS_TCP_REDIRECT).
    svc = socs_agent_services()['srs-cg635-agent']
    assert svc['entrypoint'] == ['dumb-init', 'ocs-agent-cli']
    assert environment(svc) == {'INSTANCE_ID': 'clock', 'SITE_HUB': 'ws://crossbar:8001/ws',
                                'SITE_HTTP': 'http://crossbar:8001/call', 'SOCS_TCP': '1'}
    assert 'command' not in svc
    inst = instance_for(load_site_config(), svc['hostname'], 'clock')
    assert inst['agent-class'] == 'SRSCG635Agent'
    assert flat_arguments(inst) == ['--ip-address', 'prologix-sim', '--gpib-slot', '23',
                                    '--mode', 'acq']
    sim = load_compose()['services']['prologix-sim']
    assert sim['entrypoint'][3] == 'prologix'
    assert option(sim['entrypoint'], '--port') == str(PROLOGIX_PORT)


def test_socs_agent_instance_uses_the_agents_own_options():
    # CryomechCPAAgent's own argparse (socs.agents.cryomech_cpa.agent), as for a real CPA.
    site = load_site_config()
    svc = socs_agent_services()['cpa-agent']
    inst = instance_for(site, svc['hostname'], environment(svc)['INSTANCE_ID'])
    assert inst['agent-class'] == 'CryomechCPAAgent'
    assert flat_arguments(inst) == ['--ip-address', 'cpa-sim', '--port', '502', '--mode', 'acq']
    sim = load_compose()['services']['cpa-sim']
    assert sim['entrypoint'][3] == 'cryomech-cpa' and option(sim['entrypoint'], '--port') == '502'


# -- what the image installs ----------------------------------------------------

def _dockerignore_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern (Go filepath.Match plus **) as a regex."""
    pattern = pattern.strip('/')
    out, i = '', 0
    while i < len(pattern):
        if pattern.startswith('**/', i):
            out, i = out + '(?:.*/)?', i + 3
        elif pattern.startswith('**', i):
            out, i = out + '.*', i + 2
        elif pattern[i] == '*':
            out, i = out + '[^/]*', i + 1
        elif pattern[i] == '?':
            out, i = out + '[^/]', i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r'\Z')


def build_context_files() -> list[Path]:
    """Files under ROOT that .dockerignore lets into the build context.

    Docker's rules: patterns apply in order, the last match wins, ``!``
    re-includes, and a pattern matching a directory matches everything in it.
    """
    rules = []  # (re-include?, regex, pattern text)
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            text = line.lstrip('!')
            rules.append((line.startswith('!'), _dockerignore_regex(text), text))

    def excluded(rel: str) -> bool:
        parts = rel.split('/')
        prefixes = ['/'.join(parts[:n]) for n in range(1, len(parts) + 1)]
        out = False
        for include, rx, _text in rules:
            if any(rx.match(p) for p in prefixes):
                out = not include
        return out

    def may_reinclude_below(rel: str) -> bool:
        return any(include and text.startswith(rel + '/') for include, _rx, text in rules)

    kept = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        here = Path(dirpath).relative_to(ROOT)
        # Don't descend where nothing can be re-included (.git, .venv, ...).
        dirnames[:] = sorted(d for d in dirnames
                             if not excluded((here / d).as_posix())
                             or may_reinclude_below((here / d).as_posix()))
        kept += [ROOT / here / f for f in sorted(filenames) if not excluded((here / f).as_posix())]
    return kept


def test_dockerignore_matcher_follows_docker_rules():
    # The matcher below decides what the image gets: check it on known cases.
    rx = _dockerignore_regex
    assert rx('*').match('socs_tcp') and not rx('*').match('socs_tcp/cli.py')
    assert rx('**/__pycache__').match('__pycache__') and rx('**/__pycache__').match('a/b/__pycache__')
    assert rx('socs_tcp/').match('socs_tcp') and not rx('socs_tcp/').match('socs_tcp_x')


def _has_build_backend() -> bool:
    """True if setuptools here can build the wheel without fetching anything:
    >= 64 (pyproject.toml), and bdist_wheel built in (>= 70.1) or `wheel` installed."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version
    try:
        setuptools = Version(version('setuptools'))
    except PackageNotFoundError:
        return False
    if setuptools < Version('64'):
        return False
    try:
        version('wheel')
    except PackageNotFoundError:
        return setuptools >= Version('70.1')
    return True


@pytest.fixture(scope='module')
def image_wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip install .` builds from exactly the files the image gets."""
    ctx = tmp_path_factory.mktemp('context')
    files = build_context_files()
    for path in files:
        dest = ctx / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    out = tmp_path_factory.mktemp('wheel')
    # Build offline with this environment's setuptools when it can (~1 s);
    # otherwise let pip fetch the build backend pyproject.toml names.
    isolation = ['--no-build-isolation'] if _has_build_backend() else []
    result = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', *isolation,
         '--no-cache-dir', '-q', '-w', str(out), str(ctx)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob('socs_tcp-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        yield zf


def test_build_context_holds_only_what_pip_needs():
    rels = {p.relative_to(ROOT).parts[0] for p in build_context_files()}
    assert {'setup.cfg', 'pyproject.toml', 'socs_tcp', 'agents'} <= rels
    assert not rels & {'tests', 'bench', 'docker', '.venv', '.git'}


def test_image_install_resolves_every_entry_point(image_wheel):
    names = set(image_wheel.namelist())
    ep_file = next(n for n in names if n.endswith('.dist-info/entry_points.txt'))
    eps = configparser.ConfigParser()
    eps.read_string(image_wheel.read(ep_file).decode())
    assert eps['console_scripts']['socs-tcp'].strip() == 'socs_tcp.cli:main'
    plugin_module = eps['ocs.plugins']['socs_tcp'].strip()

    def module_file(module: str) -> str:
        base = module.replace('.', '/')
        hits = {f'{base}.py', f'{base}/__init__.py'} & names
        assert hits, f'{module} is not in the image install'
        return hits.pop()

    # ocs-agent-cli imports the plugin module, then the agent-class's module.
    plugin_src = image_wheel.read(module_file(plugin_module)).decode()
    plugin_ns: dict = {}
    exec(compile(plugin_src, plugin_module, 'exec'), plugin_ns)
    for info in plugin_ns['agents'].values():
        module_file(info['module'])
    # socs-tcp simulate|demo import their subcommand modules.
    cli = importlib.import_module('socs_tcp.cli')
    for module, _help in cli.SUBCOMMANDS.values():
        module_file(module)


def test_image_install_has_every_source_module(image_wheel):
    # setup.cfg lists packages one by one: a new subpackage missing there works
    # in an editable install and is absent from the image.
    names = set(image_wheel.namelist())
    sources = [('socs_tcp', p) for p in (ROOT / 'socs_tcp').rglob('*.py')]
    sources += [('socs_tcp/agents', p) for p in (ROOT / 'agents').rglob('*.py')]
    base_dirs = {'socs_tcp': ROOT / 'socs_tcp', 'socs_tcp/agents': ROOT / 'agents'}
    missing = [f'{prefix}/{p.relative_to(base_dirs[prefix]).as_posix()}' for prefix, p in sources
               if '__pycache__' not in p.parts
               and f'{prefix}/{p.relative_to(base_dirs[prefix]).as_posix()}' not in names]
    assert not missing, f'not installed by the image (add the package to setup.cfg): {missing}'


def test_image_install_parses_under_the_image_python(image_wheel):
    too_new = []
    for name in image_wheel.namelist():
        if name.endswith('.py'):
            try:
                ast.parse(image_wheel.read(name), name, feature_version=IMAGE_PYTHON)
            except SyntaxError as exc:
                too_new.append(f'{name}:{exc.lineno}: {exc.msg}')
    assert not too_new, f'syntax newer than Python {IMAGE_PYTHON}: {too_new}'


# -- the stand-in images (docker/standins/, built by docker/ci-up.sh) -----------

STANDINS = DOCKER / 'standins'
CI_DIR = DOCKER / 'ci'
CI_UP = DOCKER / 'ci-up.sh'
SHARED_BEGIN, SHARED_END = '# -- shared with', '# ----'


def arg_default(path: Path, name: str) -> str | None:
    for word, rest in dockerfile_instructions(path):
        if word == 'ARG' and rest.startswith(f'{name}='):
            return rest.split('=', 1)[1]
    return None


def test_ocs_standin_follows_the_ocs_image_recipe():
    path = STANDINS / 'ocs' / 'Dockerfile'
    instructions = dockerfile_instructions(path)
    envs = ' '.join(rest for word, rest in instructions if word == 'ENV')
    runs = ' '.join(rest for word, rest in instructions if word == 'RUN')
    entry = [rest for word, rest in instructions if word == 'ENTRYPOINT']
    assert entry and yaml.safe_load(entry[-1]) == ['dumb-init', 'ocs-agent-cli']
    assert 'OCS_CONFIG_DIR=/config' in envs
    assert 'PATH="/opt/venv/bin:$PATH"' in envs, 'the venv comes first on PATH, as in the real image'
    assert re.search(r'useradd [^&]*-u 9000 [^&]*\bocs\b', runs), 'user ocs, uid 9000'
    assert re.search(r'pip install [^&]*"dumb-init==\$\{DUMB_INIT_VERSION\}" "ocs==\$\{OCS_VERSION\}"', runs)
    assert [rest for word, rest in instructions if word == 'WORKDIR'][-1] == '/'


def test_crossbar_standin_follows_the_ocs_crossbar_recipe():
    path = STANDINS / 'ocs-crossbar' / 'Dockerfile'
    instructions = dockerfile_instructions(path)
    entry = [rest for word, rest in instructions if word == 'ENTRYPOINT']
    assert entry and yaml.safe_load(entry[-1]) == ['/ocs/run-crossbar.sh']
    assert ('USER', 'crossbar') in instructions and ('EXPOSE', '8001') in instructions
    runs = ' '.join(rest for word, rest in instructions if word == 'RUN')
    assert 'pip install -q --no-cache-dir "crossbar==${CROSSBAR_VERSION}"' in runs
    assert '/ocs/.crossbar/config-with-address.json.template' in runs
    assert re.fullmatch(r'\d+\.\d+\.\d+', arg_default(path, 'CROSSBAR_VERSION') or ''), 'crossbar is pinned'
    script = (STANDINS / 'ocs-crossbar' / 'run-crossbar.sh').read_text()
    for var, default in (('OCS_ADDRESS_ROOT', 'observatory'), ('OCS_REALM', 'test_realm'), ('OCS_PORT', '8001')):
        assert f'${{{var}:-{default}}}' in script, f'{var} with the real image default {default}'
    assert re.search(r'^exec crossbar start ', script, re.M), 'crossbar must be PID 1 to stop on SIGTERM'


def test_socs_standin_follows_the_socs_image_recipe():
    path = STANDINS / 'socs' / 'Dockerfile'
    instructions = dockerfile_instructions(path)
    assert dockerfile_from(path) == dockerfile_from(), 'FROM the OCS image of the release this project pins'
    runs = ' '.join(rest for word, rest in instructions if word == 'RUN')
    for account in ('useradd -d /home/cryo -M cryo -u 1000', 'groupadd smurf -g 1001',
                    'groupadd group1002 -g 1002', 'useradd -m user1010 -u 1010 -g 1002'):
        assert account in runs, f'SOCS creates {account!r}'
    assert 'pip install -q --no-cache-dir "socs==${SOCS_VERSION}"' in runs
    assert not [rest for word, rest in instructions if word == 'USER'], 'SOCS runs its agents as root'
    assert [rest for word, rest in instructions if word == 'WORKDIR'][-1] == '/'
    assert ('EXPOSE', '8080/udp') in instructions
    entry = [rest for word, rest in instructions if word == 'ENTRYPOINT']
    assert entry and yaml.safe_load(entry[-1]) == ['dumb-init', 'ocs-agent-cli']


def test_standins_stand_in_for_the_releases_the_project_pins():
    tag = dockerfile_from().split(':', 1)[1]
    crossbar = load_compose()['services']['crossbar']['image']
    assert crossbar == f'simonsobs/ocs-crossbar:{tag}'
    for name in ('ocs', 'ocs-crossbar', 'socs'):
        assert arg_default(STANDINS / name / 'Dockerfile', 'OCS_VERSION') == tag.lstrip('v'), name
    socs_tag = dockerfile_from(SOCS_DOCKERFILE).split(':', 1)[1]
    assert arg_default(STANDINS / 'socs' / 'Dockerfile', 'SOCS_VERSION') == socs_tag.lstrip('v')


def _standin_for(images: list[str]) -> dict[str, str]:
    """image -> the stand-in images.sh builds for it ('' when none)."""
    script = f'source {CI_DIR / "images.sh"}; for i in "$@"; do echo "$i ${{STANDIN_FOR[$(_repo "$i")]:-}}"; done'
    out = subprocess.run(['bash', '-c', script, 'images', *images], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict((line.split(' ') + [''])[:2] for line in out.splitlines())


def test_every_image_the_deployment_is_built_on_has_a_standin(tmp_path):
    bases = [row[1] for row in _plan(write_merged_config(folder=tmp_path)) if row[0] == 'base']
    assert sorted(bases) == sorted([dockerfile_from(), dockerfile_from(SOCS_DOCKERFILE),
                                    load_compose()['services']['crossbar']['image']])
    standins = _standin_for(bases)
    for image in bases:
        assert standins[image] and (STANDINS / standins[image] / 'Dockerfile').is_file(), image


def test_ci_up_checks_the_whole_deployment_by_default():
    # .ci/run runs `make compose-check`, which runs ci-up.sh with its default files.
    text = CI_UP.read_text()
    default = re.search(r'^DEFAULT_COMPOSE_FILES="([^"]+)"$', text, re.M).group(1).split()
    assert default == [p.relative_to(ROOT).as_posix() for p in COMPOSE_FILES]
    assert 'CI_UP_COMPOSE_FILES' not in (ROOT / '.ci' / 'run').read_text() + (ROOT / 'Makefile').read_text()


def test_standins_share_their_first_steps_so_one_build_reuses_the_other():
    def shared(name: str) -> list[str]:
        lines = (STANDINS / name / 'Dockerfile').read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(SHARED_BEGIN))
        end = next(i for i, line in enumerate(lines) if i > start and line.startswith(SHARED_END))
        return lines[start + 1:end]
    assert shared('ocs') == shared('ocs-crossbar')
    assert any('update-ca-certificates' in line for line in shared('ocs'))


def test_only_the_standins_trust_the_build_hosts_extra_certificates():
    # The host's proxy CA belongs to this kind of CI machine, not to the project's images.
    for path in (DOCKERFILE, SOCS_DOCKERFILE, STANDINS / 'socs' / 'Dockerfile'):
        text = path.read_text().lower()
        code = '\n'.join(line for line in text.splitlines() if not line.lstrip().startswith('#'))
        for needle in ('ca-certificates', 'pip_cert', 'ssl_cert', 'certs/'):
            assert needle not in code, f'{path.name} handles certificates ({needle})'


def _template_wheel(tmp_path: Path) -> Path:
    """A wheel-shaped zip holding the crossbar template of the installed ocs."""
    ocs_dir = Path(importlib.util.find_spec('ocs').origin).parent
    wheel = tmp_path / 'ocs-0-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as zf:
        zf.write(ocs_dir / 'support' / 'crossbar_config.json', 'ocs/support/crossbar_config.json')
    return wheel


def _fill(template: str, env: dict[str, str]) -> str:
    """What run-crossbar.sh's sed does."""
    return (template.replace('{address_root}', env['OCS_ADDRESS_ROOT'])
            .replace('{realm}', env['OCS_REALM']).replace('{port}', env['OCS_PORT']))


def test_crossbar_template_fix_changes_only_the_ping_size(tmp_path):
    wheel = _template_wheel(tmp_path)
    out = tmp_path / 'template'
    result = subprocess.run([sys.executable, str(STANDINS / 'ocs-crossbar' / 'fix-template.py'),
                             str(wheel), str(out)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    original = zipfile.ZipFile(wheel).read('ocs/support/crossbar_config.json').decode()
    env = environment(load_compose()['services']['crossbar'])
    before, after = json.loads(_fill(original, env)), json.loads(_fill(out.read_text(), env))
    ws = ['workers', 0, 'transports', 0, 'paths', 'ws', 'options', 'auto_ping_size']

    def at(doc, path):
        for key in path:
            doc = doc[key]
        return doc
    assert (at(before, ws), at(after, ws)) == (4, 12)
    at(after, ws[:-1])[ws[-1]] = 4
    assert after == before, 'nothing else may change'
    assert at(before, ['workers', 0, 'realms', 0, 'name']) == env['OCS_REALM']


@pytest.mark.slow     # two `crossbar check` runs, ~4 s
@pytest.mark.skipif(shutil.which('crossbar', path=str(Path(sys.executable).parent)) is None,
                    reason='crossbar is not installed next to this Python')
def test_crossbar_accepts_the_fixed_template_and_refuses_the_original(tmp_path):
    wheel = _template_wheel(tmp_path)
    fixed = tmp_path / 'fixed.json'
    subprocess.run([sys.executable, str(STANDINS / 'ocs-crossbar' / 'fix-template.py'), str(wheel), str(fixed)],
                   check=True, timeout=30)
    env = environment(load_compose()['services']['crossbar'])
    crossbar = str(Path(sys.executable).parent / 'crossbar')
    for name, text in (('fixed', fixed.read_text()),
                       ('original', zipfile.ZipFile(wheel).read('ocs/support/crossbar_config.json').decode())):
        cbdir = tmp_path / name / '.crossbar'
        cbdir.mkdir(parents=True)
        (cbdir / 'config.json').write_text(_fill(text, env))
        result = subprocess.run([crossbar, 'check', '--cbdir', str(cbdir)],
                                capture_output=True, text=True, timeout=60)
        if name == 'fixed':
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            # Why the fix exists; if today's crossbar accepts 4 again, the fix can go.
            assert result.returncode != 0 and 'auto_ping_size' in result.stdout + result.stderr


# -- the check script (docker/ci-up.sh, docker/ci/) ----------------------------------

def _plan(compose_file: Path) -> list[list[str]]:
    result = subprocess.run([sys.executable, str(CI_DIR / 'probe.py'), 'plan', str(compose_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in result.stdout.splitlines()]


def write_merged_config(compose: dict | None = None, folder: Path | None = None) -> Path:
    """The merged deployment as v1 ``docker-compose config`` prints it: absolute
    build contexts and bind sources, short-form ports and volumes.

    Written to ``folder`` (default: a fresh temp dir) as docker-compose.yml.
    """
    import tempfile
    compose = compose if compose is not None else load_compose()
    for svc in compose['services'].values():
        if 'build' in svc:
            svc['build'] = dict(svc['build'], context=str((DOCKER / svc['build']['context']).resolve()))
        svc['volumes'] = [f"{(DOCKER / v.split(':', 1)[0]).resolve()}:{v.split(':', 1)[1]}"
                          for v in svc.get('volumes', [])]
    folder = folder or Path(tempfile.mkdtemp(prefix='merged-compose-'))
    path = folder / 'docker-compose.yml'
    path.write_text(yaml.safe_dump({'services': compose['services']}))
    return path


def test_check_plan_covers_every_agent_its_device_and_fault_port(tmp_path):
    plan = _plan(write_merged_config(folder=tmp_path))
    agents = {row[1]: row[2:] for row in plan if row[0] == 'agent'}
    assert agents == {'compressor-agent': ['compressor', 'compressor-sim', '127.0.0.1:7020'],
                      'psu-agent': ['psu', 'psu-sim', '127.0.0.1:7025'],
                      'cpa-agent': ['cpa', 'cpa-sim', '127.0.0.1:7502'],
                      'srs-cg635-agent': ['clock', 'prologix-sim', '127.0.0.1:7234']}
    (hub,) = [row[1:] for row in plan if row[0] == 'hub']
    site = load_site_config()['hub']
    assert hub == [site['wamp_realm'], site['address_root'], site['wamp_server'],
                   'ws://crossbar:8001/ws', 'socs-tcp:0.1.0']
    ports = sorted(row[2] for row in plan if row[0] == 'port')
    assert ports == sorted(p.rsplit(':', 1)[0] for svc in load_compose()['services'].values()
                           for p in svc.get('ports', []))
    # The SOCS agents' logs are checked for the socs_tcp switch, whichever way it was
    # made (our launcher, or SOCS_TCP=1 under SOCS's entrypoint); the sample agents are ours.
    assert [row[1:] for row in plan if row[0] == 'launcher'] == [
        ['cpa-agent', 'cpa', 'socs-tcp-agent'], ['srs-cg635-agent', 'clock', 'socs-tcp-env']]


def test_check_plan_of_the_main_file_alone(tmp_path):
    # What a site runs without the SOCS file: no SOCS agent, no SOCS image.
    plan = _plan(write_merged_config(load_compose((COMPOSE_FILE,)), tmp_path))
    assert sorted(row[1] for row in plan if row[0] == 'agent') == ['compressor-agent', 'psu-agent']
    assert not [row for row in plan if row[0] == 'launcher']
    assert sorted(row[1] for row in plan if row[0] == 'base') == [
        'simonsobs/ocs-crossbar:v0.12.1', 'simonsobs/ocs:v0.12.1']


def test_check_plan_finds_the_launcher_in_the_dockerfile_too(tmp_path):
    # A SOCS agent service that leaves the entrypoint to its image (ours: socs-tcp agent).
    compose = load_compose()
    del compose['services']['cpa-agent']['entrypoint']
    del compose['services']['srs-cg635-agent']
    plan = _plan(write_merged_config(compose, tmp_path))
    assert [row[1:] for row in plan if row[0] == 'launcher'] == [['cpa-agent', 'cpa', 'socs-tcp-agent']]
    # With SOCS's stock entrypoint it is a plain ocs-agent-cli agent: nothing to look for,
    # unless SOCS_TCP (not 0) is in its environment.
    compose['services']['cpa-agent']['entrypoint'] = ['dumb-init', 'ocs-agent-cli']
    plan = _plan(write_merged_config(compose, tmp_path))
    assert not [row for row in plan if row[0] == 'launcher']
    for value, expected in (('0', []), ('prologix,tcp', [['cpa-agent', 'cpa', 'socs-tcp-env']])):
        compose['services']['cpa-agent']['environment'] = [
            *compose['services']['cpa-agent']['environment'], f'SOCS_TCP={value}']
        plan = _plan(write_merged_config(compose, tmp_path))
        assert [row[1:] for row in plan if row[0] == 'launcher'] == expected, value


def test_check_plan_reads_compose_v2_long_forms(tmp_path):
    # `docker compose config` (v2) prints ports and volumes as mappings.
    short = write_merged_config(folder=tmp_path)
    compose = yaml.safe_load(short.read_text())
    for svc in compose['services'].values():
        svc['ports'] = [{'host_ip': p.split(':')[0], 'published': p.split(':')[1], 'target': int(p.split(':')[2]),
                         'protocol': 'tcp'} for p in svc.get('ports', [])]
        svc['volumes'] = [{'type': 'bind', 'source': v.split(':')[0], 'target': v.split(':')[1],
                           'read_only': True} for v in svc.get('volumes', [])]
    (tmp_path / 'v2').mkdir()
    merged = tmp_path / 'v2' / 'merged.yml'
    merged.write_text(yaml.safe_dump({'services': compose['services']}))
    assert _plan(merged) == _plan(short)


def test_check_plan_marks_an_agent_whose_device_has_no_control_port(tmp_path):
    compose = load_compose()
    sim = compose['services']['psu-sim']
    i = sim['entrypoint'].index('--control-port')
    del sim['entrypoint'][i:i + 2]
    agents = {row[1]: row[2:] for row in _plan(write_merged_config(compose, tmp_path)) if row[0] == 'agent'}
    assert agents['psu-agent'] == ['psu', 'psu-sim', '-']


def test_check_plan_says_which_dockerfile_is_missing(tmp_path):
    compose = load_compose()
    compose['services']['cpa-agent']['build']['dockerfile'] = 'docker/nothing.Dockerfile'
    result = subprocess.run([sys.executable, str(CI_DIR / 'probe.py'), 'plan',
                             str(write_merged_config(compose, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'cpa-agent' in result.stderr and 'nothing.Dockerfile' in result.stderr


def test_debian_mirror_is_read_from_the_hosts_apt_sources(tmp_path):
    (tmp_path / 'sources.list.d').mkdir()
    (tmp_path / 'sources.list.d' / 'debian.sources').write_text(
        'Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n'
        'Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian\n'
        'Suites: bookworm bookworm-updates\nComponents: main\n')

    def mirror(suite: str, apt: Path) -> str:
        return subprocess.run(['bash', '-c', f'source {CI_DIR / "images.sh"}; debian_mirror {suite} {apt}'],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert mirror('bookworm', tmp_path) == 'http://mirror.example/debian'
    assert mirror('bookworm-security', tmp_path) == 'http://mirror.example/debian-security'
    one_line = tmp_path / 'one-line'
    (one_line / 'sources.list.d').mkdir(parents=True)
    (one_line / 'sources.list').write_text('deb [arch=amd64] http://old.example/debian bookworm main\n')
    assert mirror('bookworm', one_line) == 'http://old.example/debian'
    assert mirror('trixie', one_line) == 'http://deb.debian.org/debian'


def test_image_releases_are_read_from_the_images_tags():
    def releases(*images: str) -> subprocess.CompletedProcess:
        script = (f'source {CI_DIR / "images.sh"}; images_releases "$@" && '
                  'echo "$OCS_RELEASE ${SOCS_RELEASE:--}"')
        return subprocess.run(['bash', '-c', script, 'images', *images],
                              capture_output=True, text=True, timeout=30)
    ok = releases('simonsobs/ocs:v0.12.1', 'simonsobs/socs:v0.6.4', 'simonsobs/ocs-crossbar:v0.12.1')
    assert (ok.returncode, ok.stdout.strip()) == (0, '0.12.1 0.6.4')
    assert releases('simonsobs/ocs:v0.12.1', 'simonsobs/ocs-crossbar:v0.12.1').stdout.strip() == '0.12.1 -'
    mixed = releases('simonsobs/ocs:v0.12.1', 'simonsobs/ocs-crossbar:v0.11.0')
    assert mixed.returncode == 1 and 'not one release' in mixed.stderr
    # A registry with a port is not a tag.
    assert _standin_for(['localhost:5000/simonsobs/ocs', 'simonsobs/socs:v0.6.4']) == {
        'localhost:5000/simonsobs/ocs': '', 'simonsobs/socs:v0.6.4': 'socs'}


def test_check_scripts_are_valid_bash():
    scripts = [CI_UP, *sorted(CI_DIR.glob('*.sh')), STANDINS / 'ocs-crossbar' / 'run-crossbar.sh']
    for script in scripts:
        result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f'{script}: {result.stderr}'
    if shutil.which('shellcheck'):
        result = subprocess.run(['shellcheck', '-x', *map(str, scripts)], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout


# -- the deployment, for real ---------------------------------------------------------

def _reachable_engine() -> str | None:
    """Why no engine can be used here, or None when `docker info` answers."""
    docker = shutil.which('docker')
    if docker is None:
        return 'no docker client on PATH'
    result = subprocess.run([docker, 'info', '--format', '{{.ServerVersion}}'],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return (f"no Docker engine reachable (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}: "
                f'{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no answer"})')
    return None


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_compose_deployment_comes_up_and_passes_the_check():
    why_not = _reachable_engine()
    if why_not:
        pytest.skip(f'compose tier skipped: {why_not}. CI runs it after this suite with a private '
                    'dockerd (.ci/run -> docker/ci-up.sh); as root here: make compose-check')
    env = dict(os.environ, CI_UP_ENGINE='existing', CI_UP_PYTHON=sys.executable)
    result = subprocess.run(['bash', str(CI_UP)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1150)
    assert result.returncode == 0, (result.stdout[-6000:] + result.stderr[-6000:])
    assert 'ci-up: PASS' in result.stdout


def _probe_module():
    spec = importlib.util.spec_from_file_location('ci_probe', CI_DIR / 'probe.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_probe_runs_under_the_image_python():
    # It also runs inside the agents' image (the in-network feed client): Python 3.10 there.
    ast.parse((CI_DIR / 'probe.py').read_text(), 'probe.py', feature_version=IMAGE_PYTHON)


def test_check_reads_both_kinds_of_acq_session():
    probe = _probe_module()
    ours = {'status': 'running', 'degraded': False,
            'data': {'connected': True, 'fields': {'v': 1.0}, 'timestamp': 10.0, 'outages': 0}}
    assert probe._healthy_reading(ours, after=None) == ours['data']
    assert probe._healthy_reading(ours, after=10.0) is None, 'readings must be newer'
    down = {'status': 'running', 'degraded': True, 'data': dict(ours['data'], connected=False)}
    assert probe._healthy_reading(down, after=None) is None and probe._degraded(down) is down
    # A SOCS agent's acq (e.g. CryomechCPAAgent) keeps nothing in session.data.
    socs = {'status': 'running', 'degraded': False, 'data': {}}
    assert probe._healthy_reading(socs, after=None)
    assert probe._degraded(dict(socs, degraded=True))
    assert probe._degraded(dict(socs, degraded=True, status='done')) is None, 'a crashed acq is not degraded'
