"""The OCS site configuration (``default.yaml``) a local stack runs from.

Either built in code (:meth:`SiteConfig.add_instance`) or loaded from an
existing site config, e.g. a docker topology (:meth:`SiteConfig.from_file`),
whose host names (``crossbar``, simulator containers) are mapped to
127.0.0.1 so the same topology runs as plain processes on this machine.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Host-block keys that point at a hub; a local run always uses its own crossbar.
_HUB_KEYS = ('wamp_server', 'wamp_http', 'wamp_realm')

#: ``address_map`` value: a host, or (host, port) to also replace the ``--port``.
Address = str | tuple


@dataclass
class AgentInstance:
    """One entry of a host block's ``agent-instances``."""

    instance_id: str
    agent_class: str
    arguments: list = field(default_factory=list)
    host: str = 'localhost'
    extra: dict = field(default_factory=dict)  # other keys (e.g. 'manage'), kept as-is

    def as_dict(self) -> dict:
        entry = {'agent-class': self.agent_class, 'instance-id': self.instance_id,
                 'arguments': list(self.arguments)}
        entry.update(self.extra)
        return entry

    def flat_arguments(self) -> list[str]:
        """Arguments as one flat list of strings (OCS accepts nested pairs too)."""
        flat: list[str] = []
        for arg in self.arguments:
            if isinstance(arg, (list, tuple)):
                flat.extend(str(a) for a in arg)
            else:
                flat.append(str(arg))
        return flat

    def option(self, name: str) -> str | None:
        """Value of ``--name`` (``--name V`` or ``--name=V``), or None."""
        args = self.flat_arguments()
        for i, arg in enumerate(args):
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + '='):
                return arg.split('=', 1)[1]
        return None


def _is_local_address(value: str) -> bool:
    if value == 'localhost':
        return True
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return False


def _remap_arguments(args: list[str], address_map: Mapping[str, Address]) -> list[str]:
    """Replace mapped host names (and their ``--port`` when a port is mapped)."""
    out = list(args)
    new_port = None
    for i, arg in enumerate(out):
        key, eq, value = arg.partition('=')
        if eq and key.startswith('--') and value in address_map:
            target = address_map[value]
            host, port = (target, None) if isinstance(target, str) else target
            out[i] = f'{key}={host}'
            new_port = port if port is not None else new_port
        elif arg in address_map and i > 0 and out[i - 1].startswith('--'):
            target = address_map[arg]
            host, port = (target, None) if isinstance(target, str) else target
            out[i] = host
            new_port = port if port is not None else new_port
    if new_port is not None:
        for i, arg in enumerate(out):
            if arg == '--port' and i + 1 < len(out):
                out[i + 1] = str(new_port)
            elif arg.startswith('--port='):
                out[i] = f'--port={new_port}'
    return out


class SiteConfig:
    """An OCS site config: hub settings, host blocks and agent instances.

    Parameters
    ----------
    realm : str
        WAMP realm (the private crossbar is started with it).
    address_root : str
        OCS address root.
    """

    def __init__(self, realm: str = 'test_realm', address_root: str = 'observatory') -> None:
        self.realm = realm
        self.address_root = address_root
        self.hub_extra: dict = {}
        self.hosts: dict[str, dict] = {'localhost': {}}
        self.instances: dict[str, AgentInstance] = {}

    def add_instance(self, instance_id: str, agent_class: str, arguments: list | tuple = (),
                     host: str = 'localhost') -> AgentInstance:
        """Add (or replace) an agent instance in host block ``host``.

        Raises
        ------
        ValueError
            If ``instance_id`` or ``agent_class`` is empty.
        """
        if not instance_id or not isinstance(instance_id, str):
            raise ValueError(f'instance_id must be a non-empty str, got {instance_id!r}')
        if not agent_class or not isinstance(agent_class, str):
            raise ValueError(f'agent_class must be a non-empty str, got {agent_class!r}')
        self.hosts.setdefault(host, {})
        inst = AgentInstance(instance_id, agent_class, [str(a) for a in arguments], host)
        self.instances[instance_id] = inst
        return inst

    @classmethod
    def from_file(cls, path: str | os.PathLike,
                  address_map: Mapping[str, Address] | None = None) -> SiteConfig:
        """Load a site config (e.g. a docker topology) to run on this machine.

        The hub block's realm and address root are kept; its URLs are replaced
        by the local crossbar's when the config is written. Host-block hub
        overrides are dropped for the same reason.

        Parameters
        ----------
        path : path
            A site config YAML file.
        address_map : mapping, optional
            ``{hostname: '127.0.0.1'}`` replaces that host name wherever it is
            an option value in agent arguments (``--ip-address sim``);
            ``{hostname: ('127.0.0.1', port)}`` also replaces the ``--port`` of
            the same instance (simulators run locally on free ports).

        Raises
        ------
        ValueError
            If the file has no hub or hosts, or an agent's ``--ip-address`` is
            still not a loopback address after mapping (device I/O in a local
            run stays on 127.0.0.1): the message names the instance.
        """
        address_map = dict(address_map or {})
        for name, target in address_map.items():
            host = target if isinstance(target, str) else target[0]
            if not _is_local_address(host):
                raise ValueError(f'address_map[{name!r}] must map to a loopback address, '
                                 f'got {host!r}')
        import yaml  # a test extra: imported only where a file is read or written

        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict) or 'hub' not in data or 'hosts' not in data:
            raise ValueError(f'{path}: a site config needs "hub" and "hosts" blocks')
        hub = dict(data['hub'])
        site = cls(realm=hub.pop('wamp_realm', 'test_realm'),
                   address_root=hub.pop('address_root', 'observatory'))
        for key in ('wamp_server', 'wamp_http'):
            hub.pop(key, None)
        site.hub_extra = hub
        site.hosts = {}
        for host, block in (data['hosts'] or {}).items():
            block = dict(block or {})
            entries = block.pop('agent-instances', []) or []
            for key in _HUB_KEYS:
                block.pop(key, None)
            site.hosts[host] = block
            for entry in entries:
                entry = dict(entry)
                inst = AgentInstance(
                    instance_id=entry.pop('instance-id'), agent_class=entry.pop('agent-class'),
                    arguments=[], host=host)
                inst.arguments = entry.pop('arguments', []) or []
                inst.arguments = _remap_arguments(inst.flat_arguments(), address_map)
                inst.extra = entry
                address = inst.option('--ip-address')
                if address is not None and not _is_local_address(address):
                    raise ValueError(
                        f'{path}: instance {inst.instance_id!r} talks to {address!r}; map it '
                        f'to 127.0.0.1 with address_map={{{address!r}: ...}}')
                site.instances[inst.instance_id] = inst
        return site

    def render(self, wamp_server: str, wamp_http: str, log_dir: str | os.PathLike) -> dict:
        """Return the site config as a dict, with the hub at the given URLs and
        every host block logging to ``log_dir``."""
        hub: dict[str, Any] = {'wamp_server': wamp_server, 'wamp_http': wamp_http,
                               'wamp_realm': self.realm, 'address_root': self.address_root}
        hub.update(self.hub_extra)
        hosts = {}
        for host, block in self.hosts.items():
            block = dict(block)
            block['log-dir'] = str(log_dir)
            block['agent-instances'] = [i.as_dict() for i in self.instances.values()
                                        if i.host == host]
            hosts[host] = block
        return {'hub': hub, 'hosts': hosts}

    def write(self, path: str | os.PathLike, wamp_server: str, wamp_http: str,
              log_dir: str | os.PathLike) -> Path:
        """Write the rendered config atomically (agents may be reading it)."""
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(yaml.safe_dump(self.render(wamp_server, wamp_http, log_dir),
                                      sort_keys=False))
        os.replace(tmp, path)
        return path
