"""The docker deployment (docker/) is valid and agrees with itself.

No Docker engine runs in CI, so everything that can be checked without one
is checked here: the compose file validates with ``docker-compose config``,
the compose services and the site config name the same instances, hosts and
ports, the images are pinned, ports are published on loopback only, and the
build context the Dockerfile sees installs a package whose entry points
resolve. The topology itself runs in ``test_docker_topology.py``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
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
SITE_CONFIG = DOCKER / 'config' / 'default.yaml'
DOCKERFILE = DOCKER / 'Dockerfile'
DOCKERIGNORE = ROOT / '.dockerignore'

# The OCS images run Python 3.10 (Ubuntu 22.04) up to v0.12.x.
IMAGE_PYTHON = (3, 10)


# -- reading the deployment --------------------------------------------------

def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


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
    """Services run by the image's entry point (ocs-agent-cli): they set INSTANCE_ID."""
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


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r'\\\n', ' ', DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            word, _, rest = line.partition(' ')
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_from() -> str:
    """The base image reference with build ARG defaults substituted."""
    args = {}
    for word, rest in dockerfile_instructions():
        if word == 'ARG' and '=' in rest:
            k, v = rest.split('=', 1)
            args[k.strip()] = v.strip()
        if word == 'FROM':
            return re.sub(r'\$\{?(\w+)\}?', lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
    raise AssertionError('Dockerfile has no FROM')


# -- the compose file validates -----------------------------------------------

def _compose_config(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which('docker-compose')
    if exe is None:
        pytest.skip("docker-compose (Debian package 'docker-compose', v1) is not installed; "
                    "CI installs it in .ci/run")
    return subprocess.run([exe, '-f', str(path), 'config', '-q'],
                          capture_output=True, text=True, timeout=60)


def test_compose_file_validates():
    result = _compose_config(COMPOSE_FILE)
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
    assert set(agents) >= {'compressor-agent', 'psu-agent'}
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
    assert set(sims) == {'compressor-sim', 'psu-sim'}
    for name, svc in agent_services(compose).items():
        inst = instance_for(site, svc['hostname'], environment(svc)['INSTANCE_ID'])
        argv = flat_arguments(inst)
        host, port = option(argv, '--ip-address'), option(argv, '--port')
        assert host in sims, f'{name}: --ip-address {host!r} is not a simulator service {sorted(sims)}'
        sim_port = option(sims[host]['entrypoint'], '--port')
        assert port == sim_port, f'{name}: --port {port} but {host} listens on {sim_port}'
        # Started only once the device it reads is up.
        assert host in svc.get('depends_on', {}), f'{name} does not depend on {host}'


def test_simulators_listen_where_other_containers_reach_them():
    for name, svc in simulator_services(load_compose()).items():
        argv = svc['entrypoint']
        # 127.0.0.1 inside a container is unreachable from the agents' containers.
        assert option(argv, '--host') == '0.0.0.0', f'{name} must listen on all container interfaces'
        assert argv[:3] == ['dumb-init', 'socs-tcp', 'simulate'], \
            f'{name}: run under dumb-init so `docker compose stop` ends it at once'
        assert argv[3] in ('compressor', 'psu'), f'{name}: unknown device {argv[3]!r}'
        assert option(argv, '--control-port'), f'{name}: no --control-port for fault injection'


def test_simulator_healthchecks_probe_the_device_port():
    for name, svc in simulator_services(load_compose()).items():
        port = option(svc['entrypoint'], '--port')
        probe = ' '.join(svc['healthcheck']['test'])
        assert f"('127.0.0.1', {port})" in probe, f'{name}: healthcheck does not probe port {port}'


def test_agent_classes_are_registered_plugins():
    plugin = importlib.import_module('socs_tcp.agents.plugin')
    site = load_site_config()
    for host, block in site['hosts'].items():
        for inst in block['agent-instances']:
            cls = inst['agent-class']
            assert cls in plugin.agents, f'{host}/{inst["instance-id"]}: {cls} not in socs_tcp.agents.plugin.agents'
            module = plugin.agents[cls]['module']
            assert importlib.util.find_spec(module) is not None, f'{cls}: module {module} not found'


def test_instance_arguments_parse_with_the_agents_own_parser(capsys):
    # A bad value would only show as a container in a restart loop.
    plugin = importlib.import_module('socs_tcp.agents.plugin')
    for host, block in load_site_config()['hosts'].items():
        for inst in block['agent-instances']:
            module = importlib.import_module(plugin.agents[inst['agent-class']]['module'])
            where = f"{host}/{inst['instance-id']}"
            try:
                args = module.make_parser().parse_args(flat_arguments(inst))
            except SystemExit:
                pytest.fail(f'{where}: arguments rejected: {capsys.readouterr().err}')
            assert args.mode == 'acq', f'{where}: acq does not start with the container'


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


def test_built_image_is_tagged_with_the_package_version():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    built = {svc['image'] for svc in load_compose()['services'].values() if 'build' in svc}
    assert built == {f"socs-tcp:{cfg['metadata']['version']}"}


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
