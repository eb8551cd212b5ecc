"""Checks ``socs-tcp agent`` makes before it hands over to OCS.

``ocs-agent-cli`` meets a missing ``OCS_CONFIG_DIR`` with a bare
``AssertionError``, an unknown instance id with a traceback from deep inside
``ocs.site_config``, and passes flags it does not know on to the agent. These
checks find the same mistakes first and say, in one line, what is wrong and
what to do: which variable, file, host block, instance or flag.

They read the site config the way ``ocs.site_config.get_config`` does
(``--site-file``, else ``$OCS_CONFIG_DIR/<--site or default>.yaml``; the host
block ``--site-host``/``$SITE_HOST``, else this machine's host name, else
``localhost``) and leave everything else, such as the agent's own arguments
in the site config, to OCS and the agent.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

__all__ = ['SiteCheckError', 'check_agent_args', 'refuse']

#: ocs-agent-cli's own flags that the site options (ocs.site_config.add_arguments) do not cover.
_LAUNCHER_FLAGS = ('--agent', '--entrypoint')


class SiteCheckError(ValueError):
    """An agent launch that OCS would refuse or crash on; the message says why in one line."""


def _option(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + '='):
            value = arg.split('=', 1)[1]
    return value


def _site_file(argv: Sequence[str], environ: Mapping[str, str]) -> Path | None:
    """The site config file OCS would read, or None for ``--site none``."""
    site_file = _option(argv, '--site-file')
    site = _option(argv, '--site')
    if site == 'none':
        return None
    if site_file is not None:
        if site is not None:
            raise SiteCheckError('--site and --site-file were both given: pass one of them')
        path = Path(site_file)
        if not path.is_file():
            raise SiteCheckError(f'--site-file {site_file}: no such file')
        return path
    config_dir = environ.get('OCS_CONFIG_DIR')
    if not config_dir:
        raise SiteCheckError('OCS_CONFIG_DIR is not set: set it to the directory that holds your site '
                             'config (default.yaml), or pass --site-file FILE '
                             '(`socs-tcp stack` makes a local one)')
    if not Path(config_dir).is_dir():
        raise SiteCheckError(f'OCS_CONFIG_DIR={config_dir} is not a directory')
    path = Path(config_dir) / f'{site or "default"}.yaml'
    if not path.is_file():
        raise SiteCheckError(f'site config {path} does not exist (OCS_CONFIG_DIR={config_dir}'
                             f'{", --site " + site if site else ""})')
    return path


def _load_site(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SiteCheckError(f'site config {path} cannot be read: {first}') from None
    if not isinstance(data, dict) or not isinstance(data.get('hosts'), dict) or 'hub' not in data:
        raise SiteCheckError(f'site config {path} is not an OCS site config (it needs "hub" and "hosts")')
    return data


def _instance(argv: Sequence[str], environ: Mapping[str, str], path: Path, site: dict) -> dict:
    """The agent-instances entry the launch names."""
    instance_id = _option(argv, '--instance-id') or environ.get('INSTANCE_ID')
    if not instance_id:
        raise SiteCheckError('no --instance-id given (and INSTANCE_ID is not set)')
    site_host = _option(argv, '--site-host') or environ.get('SITE_HOST')
    attempts = [site_host or socket.gethostname(), 'localhost']
    host = next((h for h in attempts if h in site['hosts']), None)
    if host is None:
        raise SiteCheckError(f'site config {path} has no host block for {attempts[0]!r} or "localhost" '
                             f'(hosts: {", ".join(map(str, site["hosts"])) or "none"}); '
                             f'pass --site-host NAME')
    instances = (site['hosts'][host] or {}).get('agent-instances') or []
    for entry in instances:
        if isinstance(entry, dict) and entry.get('instance-id') == instance_id:
            return entry
    known = ', '.join(str(e.get('instance-id')) for e in instances if isinstance(e, dict)) or 'none'
    raise SiteCheckError(f'instance id {instance_id!r} is not in host block {host!r} of {path} '
                         f'(instances there: {known})')


def _plugin_agents() -> dict[str, dict]:
    """agent-class -> {'module', 'entry_point'} of every installed OCS plugin, quietly."""
    agents: dict[str, dict] = {}
    for ep in entry_points(group='ocs.plugins'):
        try:
            plugin = ep.load()
        except Exception:   # a broken plugin is OCS's to report when it is used
            continue
        for name, spec in getattr(plugin, 'agents', {}).items():
            agents.setdefault(name, spec)
    return agents


def _known_flags(agent_module: str | None) -> argparse.ArgumentParser:
    """A parser holding every flag the launch may carry: the agent's, OCS's site options, the launcher's."""
    from ocs import site_config

    parser = None
    if agent_module is not None:
        make_parser = getattr(importlib.import_module(agent_module), 'make_parser', None)
        if callable(make_parser):
            parser = make_parser()
    parser = parser if isinstance(parser, argparse.ArgumentParser) else argparse.ArgumentParser()
    site_config.add_arguments(parser)
    for flag in _LAUNCHER_FLAGS:
        if flag not in parser._option_string_actions:
            parser.add_argument(flag)
    return parser


def _unknown_flags(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    known = list(parser._option_string_actions)
    unknown = []
    for arg in argv:
        if arg == '--':
            break
        if not arg.startswith('--'):
            continue
        flag = arg.split('=', 1)[0]
        # argparse accepts an unambiguous prefix (allow_abbrev), so do we.
        if flag not in known and len([k for k in known if k.startswith(flag)]) != 1:
            unknown.append(flag)
    return unknown


def check_agent_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Check an ``ocs-agent-cli`` command line against its site config.

    Parameters
    ----------
    argv : sequence of str
        The arguments ``ocs-agent-cli`` would get (``--instance-id ID``,
        ``--site-*``, ``--agent FILE --entrypoint NAME``, agent flags).
    environ : mapping, optional
        The environment (default ``os.environ``): ``OCS_CONFIG_DIR``,
        ``INSTANCE_ID``, ``SITE_HOST``.

    Raises
    ------
    SiteCheckError
        With a one-line message naming what is wrong: ``OCS_CONFIG_DIR`` unset
        or not a directory, the site file missing or not a site config, no
        host block for this machine, an unknown instance id, an agent class no
        installed OCS plugin provides, or a flag neither the agent, OCS nor
        the launcher knows.

    Notes
    -----
    To know the agent's own flags this imports the agent's module (and calls
    its ``make_parser()``, the OCS convention), as ``ocs-agent-cli`` is about
    to do anyway: call it after ``socs.tcp`` has been switched. An agent
    started with ``--agent FILE`` is not imported; its flags are not checked.
    """
    argv = list(argv)
    environ = os.environ if environ is None else environ
    path = _site_file(argv, environ)
    agent_module = None
    if path is not None:
        entry = _instance(argv, environ, path, _load_site(path))
        agent_class = entry.get('agent-class')
        if _option(argv, '--agent') is None:
            agents = _plugin_agents()
            if agent_class not in agents:
                raise SiteCheckError(f'agent class {agent_class!r} of instance {entry["instance-id"]!r} '
                                     f'is not provided by any installed OCS plugin (installed: '
                                     f'{", ".join(sorted(agents)) or "none"}); install its package, '
                                     f'or pass --agent FILE --entrypoint NAME')
            agent_module = agents[agent_class]['module']
    if _option(argv, '--agent') is not None:
        if _option(argv, '--entrypoint') is None:
            raise SiteCheckError('--agent FILE needs --entrypoint NAME (the function that starts the agent)')
        return
    unknown = _unknown_flags(argv, _known_flags(agent_module))
    if unknown:
        whose = 'the agent\'s, ' if agent_module else ''
        raise SiteCheckError(f'unknown argument{"s" if len(unknown) > 1 else ""} {" ".join(unknown)} '
                             f'({whose}OCS\'s --site-* options and --instance-id are accepted)')


def refuse(argv: Sequence[str], environ: Mapping[str, str] | None = None,
           stream: TextIO | None = None, prog: str = 'socs-tcp agent') -> bool:
    """Run :func:`check_agent_args`; on a problem write ``prog: <why>`` to ``stream`` and return True.

    ``if _site_checks.refuse(argv): return 2`` is the whole use in a launcher.
    """
    try:
        check_agent_args(argv, environ)
    except SiteCheckError as exc:
        (stream or sys.stderr).write(f'{prog}: {exc}\n')
        return True
    return False
