"""A complete OCS stack on this machine: crossbar, simulators and agents.

Used by ``socs-tcp demo``, the pytest plugin (`socs_tcp.testing.plugin`), the
end-to-end tests and the docker-topology test::

    with OcsStack() as stack:
        crossbar = stack.start_crossbar(wait=False)      # ~4 s to ready: overlap it
        sim = stack.start_simulator('psu')
        stack.add_agent('psu-1', 'PowerSupplyAgent',
                        ['--ip-address', '127.0.0.1', '--port', sim.port, '--mode', 'acq'])
        stack.start_agent('psu-1')                       # ocs-agent-cli --instance-id psu-1
        client = stack.wait_agents('psu-1')['psu-1']     # an OCSClient, once it joined
        ...
    # everything started is stopped here: SIGINT, SIGTERM, SIGKILL, bounded waits

Every process is a :class:`~socs_tcp.testing._processes.ManagedProcess` (own
process group, output to ``<workdir>/logs/<name>.log``) and is stopped on
leaving the ``with`` block, whether normally, on an exception or on Ctrl-C,
and at interpreter exit if the stack was never closed. ``with stack.scope():``
stops what was started inside it on leaving it, and leaves the rest running
(a test's agents, on a crossbar shared by the whole test session). All network
traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from twisted.logger import Logger

from socs_tcp.testing._crossbar import HOST, Crossbar, CrossbarError, find_executable, free_port
from socs_tcp.testing._processes import STOP_WAITS, ManagedProcess, StopRecord, record_of, stop_processes
from socs_tcp.testing._site import Address, SiteConfig

if TYPE_CHECKING:
    from socs_tcp.sim.control import SimControl

log = Logger()

__all__ = ['OcsStack', 'StackError', 'CrossbarError', 'Service', 'Simulator', 'Agent',
           'StopRecord', 'STACK_ENV']

#: Environment variable set in every child to the stack's id: lets a test find
#: any process a stack started (and prove none survived) with psutil.
STACK_ENV = 'SOCS_TCP_STACK_ID'

#: Inherited variables that would redirect ocs-agent-cli away from our config.
_OCS_ENV = ('INSTANCE_ID', 'SITE_HUB', 'SITE_HTTP', 'SITE_HOST', 'CROSSBAR_TIMEOUT',
            'OCS_CONFIG_DIR')

_ANNOUNCE = re.compile(rb'^([A-Z][A-Z_]*) (\d+)\s*$', re.MULTILINE)


class StackError(RuntimeError):
    """A process of the stack failed to start or to become ready."""


class Service:
    """A process that announces its ports as ``NAME <int>`` lines on stdout.

    The simulators print ``PORT <n>`` and ``CONTROL <n>``; any program that
    prints such lines (flushed) can be started with
    :meth:`OcsStack.start_service`.

    Attributes
    ----------
    name : str
    process : ManagedProcess
    ports : dict
        Announced values, e.g. ``{'PORT': 40123, 'CONTROL': 40124}`` (filled by
        :meth:`wait_ready`).
    """

    def __init__(self, name: str, process: ManagedProcess, expect: Sequence[str]) -> None:
        self.name = name
        self.process = process
        self.expect = tuple(expect)
        self.ports: dict[str, int] = {}

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.name} {self.ports} pid={self.process.pid}>'

    def poll_ready(self) -> bool:
        """Parse the announcements written so far; True once all are there."""
        for key, value in _ANNOUNCE.findall(self.process.log_path.read_bytes()
                                            if self.process.log_path.exists() else b''):
            self.ports.setdefault(key.decode(), int(value))
        return all(k in self.ports for k in self.expect)

    def wait_ready(self, timeout: float = 15.0) -> dict[str, int]:
        """Return the announced ports once all expected lines are there.

        Raises
        ------
        StackError
            If the process exits first or ``timeout`` passes, with its log tail.
        """
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if not self.process.running:
                raise StackError(f'{self.name} exited with status {self.process.returncode} '
                                 f'before announcing {self.expect}; log:\n'
                                 f'{self.process.log_tail()}')
            if time.monotonic() > deadline:
                raise StackError(f'{self.name} did not announce {self.expect} within '
                                 f'{timeout} s; log:\n{self.process.log_tail()}')
            time.sleep(0.05)
        return dict(self.ports)

    @property
    def port(self) -> int:
        """The device port (``PORT`` line)."""
        return self.ports['PORT']


#: A kind of `Service`, for `OcsStack._launch`.
_S = TypeVar('_S', bound=Service)


class Simulator(Service):
    """A ``socs-tcp simulate <kind>`` process, with its fault-control channel."""

    def __init__(self, name: str, kind: str, process: ManagedProcess) -> None:
        super().__init__(name, process, ('PORT', 'CONTROL'))
        self.kind = kind
        self._control: SimControl | None = None

    @property
    def control_port(self) -> int:
        return self.ports['CONTROL']

    def control(self, command: str) -> str:
        """Send one control command (``drop``, ``silent on``, ``stop``,
        ``start``, ``restart 5``, ``blackhole on``, ``status`` ...; see
        `socs_tcp.sim.control`) and return the answer after ``OK``.

        Raises
        ------
        socs_tcp.sim.control.SimControlError
            If the simulator answers ``ERR ...`` (the message says why).
        ConnectionError
            If the control channel can't be reached or doesn't answer.
        """
        if self._control is None:
            from socs_tcp.sim.control import SimControl

            self._control = SimControl(HOST, self.control_port)
        return self._control.send(command)


class Agent:
    """An agent instance started with ``ocs-agent-cli --instance-id``."""

    def __init__(self, instance_id: str, agent_class: str, process: ManagedProcess) -> None:
        self.instance_id = instance_id
        self.agent_class = agent_class
        self.process = process
        self.client = None  # the OCSClient, once it joined (see OcsStack.wait_agents)

    def __repr__(self) -> str:
        return f'<Agent {self.instance_id} ({self.agent_class}) pid={self.process.pid}>'


class OcsStack:
    """Starts and owns crossbar, simulators and agents; stops all of them.

    Parameters
    ----------
    workdir : path, optional
        Where the crossbar dir, site config (``config/default.yaml``) and logs
        (``logs/``) go. Default: a new temporary directory (kept afterwards,
        for the logs).
    realm, address_root : str
        Hub settings for a generated site config (ignored after
        :meth:`load_site_config`, which takes them from the file).
    stop_waits : three floats
        Bounded waits after SIGINT, SIGTERM and SIGKILL when stopping.

    Notes
    -----
    Not thread-safe: drive a stack from one thread.
    """

    def __init__(self, workdir: str | os.PathLike | None = None, *,
                 realm: str = 'test_realm', address_root: str = 'observatory',
                 stop_waits: Sequence[float] = STOP_WAITS) -> None:
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix='socs-tcp-stack-')
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / 'logs'
        self.log_dir.mkdir(exist_ok=True)
        self.config_dir = self.workdir / 'config'
        self.site = SiteConfig(realm=realm, address_root=address_root)
        self.stop_waits = tuple(stop_waits)
        self.id = uuid.uuid4().hex[:12]
        self.crossbar: Crossbar | None = None
        self.services: dict[str, Service] = {}
        self.agents: dict[str, Agent] = {}
        self.stop_records: list[StopRecord] = []
        self._started: list[ManagedProcess] = []
        self._closed = False

    # -- context manager ----------------------------------------------------------

    def __enter__(self) -> OcsStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- environment ----------------------------------------------------------------

    @property
    def site_file(self) -> Path:
        """The generated site config (``<workdir>/config/default.yaml``)."""
        return self.config_dir / 'default.yaml'

    @property
    def client_args(self) -> list[str]:
        """``args`` for ``OCSClient`` so it uses this stack's site config."""
        return ['--site-file', str(self.site_file)]

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for children: ours, minus OCS overrides that would point
        elsewhere, plus ``OCS_CONFIG_DIR``, unbuffered Python output and the
        stack marker :data:`STACK_ENV`."""
        env = {k: v for k, v in os.environ.items() if k not in _OCS_ENV}
        env.update({'OCS_CONFIG_DIR': str(self.config_dir), 'PYTHONUNBUFFERED': '1',
                    STACK_ENV: self.id})
        env.update(extra or {})
        return env

    def _track(self, proc: ManagedProcess) -> ManagedProcess:
        self._started.append(proc)
        return proc

    def _check_open(self) -> None:
        if self._closed:
            raise StackError('this stack has been stopped; make a new one')

    # -- crossbar -------------------------------------------------------------------

    def start_crossbar(self, port: int | None = None, *, wait: bool = True,
                       timeout: float = 30.0) -> Crossbar:
        """Start a private crossbar on 127.0.0.1 and write the site config.

        Parameters
        ----------
        port : int, optional
            Default: a free port.
        wait : bool
            Block until it serves ``/info`` (else call ``crossbar.wait_ready()``
            or :meth:`wait_agents` later; agents started meanwhile connect
            once it is up).

        Raises
        ------
        StackError
            If one is already running.
        FileNotFoundError
            If ``crossbar`` is not installed.
        CrossbarError
            If ``wait`` and it does not become ready in ``timeout`` seconds.
        """
        self._check_open()
        if self.crossbar is not None:
            raise StackError('crossbar already started')
        exe = find_executable('crossbar', 'pip install crossbar (or socs_tcp[test])')
        self.crossbar = Crossbar(exe, self.workdir / 'crossbar', realm=self.site.realm,
                                 address_root=self.site.address_root,
                                 port=port or free_port(), env=self.child_env())
        self._track(self.crossbar.process)
        self.write_site_config()
        if wait:
            self.crossbar.wait_ready(timeout)
        return self.crossbar

    # -- simulators and other services ------------------------------------------------

    def start_service(self, name: str, argv: Sequence[str], *, expect: Sequence[str] = ('PORT',),
                      wait: bool = True, timeout: float = 15.0,
                      env: Mapping[str, str] | None = None) -> Service:
        """Start any program that prints ``NAME <int>`` lines (e.g. ``PORT 40123``).

        ``env`` adds to the environment every child of the stack gets.

        Raises
        ------
        ValueError
            If ``name`` is already used.
        StackError
            If ``wait`` and it exits or does not announce ``expect`` in time.
        """
        return self._launch(name, argv, lambda proc: Service(name, proc, expect), wait, timeout, env)

    def _launch(self, name: str, argv: Sequence[str], make: Callable[[ManagedProcess], _S],
                wait: bool, timeout: float, env: Mapping[str, str] | None = None) -> _S:
        """Start ``argv`` as service ``name`` (``make`` wraps the process); wait if asked."""
        self._check_open()
        if name in self.services:
            raise ValueError(f'name {name!r} is already used by {self.services[name]!r}')
        proc = self._track(ManagedProcess(name, argv, log_path=self.log_dir / f'{name}.log',
                                          env=self.child_env(env), cwd=self.workdir))
        service = make(proc)
        self.services[name] = service
        if wait:
            service.wait_ready(timeout)
        return service

    def start_simulator(self, kind: str, name: str | None = None, *, args: Sequence[str] = (),
                        wait: bool = True, timeout: float = 15.0) -> Simulator:
        """Start ``socs-tcp simulate <kind>`` on free 127.0.0.1 ports.

        Parameters
        ----------
        kind : str
            A device ``socs-tcp simulate`` knows: ``'compressor'``, ``'psu'``
            (the sample agents'), ``'cryomech-cpa'``, ``'lakeshore372'``,
            ``'pfeiffer-tpg366'`` (SOCS agents' devices).
        name : str, optional
            Default: ``'<kind>-sim'``.
        args : sequence of str
            Extra simulator arguments.
        wait : bool
            Block until it printed its ``PORT`` and ``CONTROL`` lines (else
            call ``sim.wait_ready()`` before using ``sim.port``).

        Raises
        ------
        ValueError
            If ``kind`` is not a str or ``name`` is taken.
        StackError
            If ``wait`` and it does not come up.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f'kind must be a simulator name such as "psu", got {kind!r}')
        name = name or f'{kind}-sim'
        argv = [sys.executable, '-m', 'socs_tcp.cli', 'simulate', kind, '--host', HOST,
                '--port', '0', '--control-port', '0', *args]
        return self._launch(name, argv, lambda proc: Simulator(name, kind, proc), wait, timeout)

    # -- site config and agents ----------------------------------------------------------

    def add_agent(self, instance_id: str, agent_class: str, arguments: Sequence = (),
                  host: str = 'localhost') -> None:
        """Add an agent instance to the site config (start it with :meth:`start_agent`).

        Raises
        ------
        ValueError
            If ``instance_id`` or ``agent_class`` is empty.
        """
        self.site.add_instance(instance_id, agent_class, list(arguments), host)
        if self.crossbar is not None:
            self.write_site_config()

    def load_site_config(self, path: str | os.PathLike,
                         address_map: Mapping[str, Address] | None = None) -> SiteConfig:
        """Run the agents of an existing site config (e.g. a docker topology).

        Must be called before :meth:`start_crossbar` (crossbar takes the
        realm and address root from the file). Host names in agent arguments
        are mapped with ``address_map``; see :meth:`SiteConfig.from_file`.

        Raises
        ------
        StackError
            If crossbar is already running.
        ValueError
            From :meth:`SiteConfig.from_file`.
        """
        if self.crossbar is not None:
            raise StackError('load_site_config() must come before start_crossbar()')
        self.site = SiteConfig.from_file(path, address_map)
        return self.site

    def write_site_config(self) -> Path:
        """(Re)write ``default.yaml`` with the hub at this stack's crossbar."""
        if self.crossbar is None:
            raise StackError('start_crossbar() first: the site config names its port')
        return self.site.write(self.site_file, self.crossbar.wamp_server,
                               self.crossbar.wamp_http, self.log_dir)

    def start_agent(self, instance_id: str, agent_class: str | None = None,
                    arguments: Sequence | None = None) -> Agent:
        """Launch ``ocs-agent-cli --instance-id ID`` for an instance of the site
        config (adding it first when ``agent_class`` is given).

        Returns at once; use :meth:`wait_agents` to wait until it joined.

        Raises
        ------
        KeyError
            If the instance is not in the site config.
        StackError
            If crossbar was not started or the agent already runs.
        """
        self._check_open()
        if self.crossbar is None:
            raise StackError('start_crossbar() first: agents need the hub address')
        if agent_class is not None:
            self.add_agent(instance_id, agent_class, arguments or ())
        if instance_id not in self.site.instances:
            raise KeyError(f'instance_id {instance_id!r} is not in the site config '
                           f'(known: {sorted(self.site.instances)})')
        if instance_id in self.agents:
            raise StackError(f'agent {instance_id!r} already started')
        inst = self.site.instances[instance_id]
        self.write_site_config()
        exe = find_executable('ocs-agent-cli', 'pip install ocs')
        argv = [exe, '--instance-id', instance_id, '--site-host', inst.host]
        proc = self._track(ManagedProcess(instance_id, argv,
                                          log_path=self.log_dir / f'agent-{instance_id}.log',
                                          env=self.child_env(), cwd=self.workdir))
        agent = Agent(instance_id, inst.agent_class, proc)
        self.agents[instance_id] = agent
        return agent

    def wait_agents(self, *instance_ids: str, timeout: float = 45.0) -> dict:
        """Wait until the agents have joined crossbar; return their clients.

        Waits for crossbar first if it is not ready yet. Each client is an
        ``ocs.ocs_client.OCSClient`` built with this stack's site config (also
        kept as ``stack.agents[id].client``).

        Parameters
        ----------
        *instance_ids : str
            Default: every started agent.
        timeout : float
            Seconds for all of them together (crossbar's start included).

        Raises
        ------
        StackError
            If an agent process exits or does not join in time (with its log).
        CrossbarError
            If crossbar does not come up in time.
        """
        from ocs.ocs_client import OCSClient

        ids = list(instance_ids) or list(self.agents)
        unknown = [i for i in ids if i not in self.agents]
        if unknown:
            raise KeyError(f'agents not started: {unknown}')
        deadline = time.monotonic() + timeout
        if self.crossbar is None:
            raise StackError('start_crossbar() first')
        self.crossbar.wait_ready(max(0.1, deadline - time.monotonic()))
        pending = [i for i in ids if self.agents[i].client is None]
        last_error: dict[str, str] = {}
        while pending:
            for iid in list(pending):
                agent = self.agents[iid]
                if not agent.process.running:
                    raise StackError(
                        f'agent {iid!r} exited with status {agent.process.returncode} '
                        f'before joining; log {agent.process.log_path}:\n'
                        f'{agent.process.log_tail()}')
                try:
                    agent.client = OCSClient(iid, args=self.client_args)
                except Exception as err:  # ControlClientError until it registered
                    last_error[iid] = repr(err)
                else:
                    pending.remove(iid)
                    log.info('agent {iid} joined after {s:.1f} s', iid=iid,
                             s=time.monotonic() - agent.process.started_at)
            if pending and time.monotonic() > deadline:
                iid = pending[0]
                raise StackError(
                    f'agents {pending} did not join within {timeout} s (last error: '
                    f'{last_error.get(iid)}); log {self.agents[iid].process.log_path}:\n'
                    f'{self.agents[iid].process.log_tail()}')
            if pending:
                time.sleep(0.2)
        return {i: self.agents[i].client for i in ids}

    def client(self, instance_id: str):
        """A new ``OCSClient`` for ``instance_id`` on this stack (no waiting)."""
        from ocs.ocs_client import OCSClient

        return OCSClient(instance_id, args=self.client_args)

    # -- stopping -----------------------------------------------------------------------

    @contextlib.contextmanager
    def scope(self) -> Iterator[OcsStack]:
        """Stop, on leaving the block, every process started inside it.

        What ran before stays running (e.g. the crossbar a whole test session
        shares), and so does this stack's crossbar if it was started inside
        (:meth:`stop` stops it). Each step is SIGINT, SIGTERM, SIGKILL with
        the bounded ``stop_waits``, for all of them at once. The names and
        instance ids of what was stopped can be used again; their records are
        in :attr:`stop_records`.

        Raises
        ------
        StackError
            If the stack has been stopped.
        """
        self._check_open()
        mark = len(self._started)
        try:
            yield self
        finally:
            self._stop_started_since(mark)

    def _stop_started_since(self, mark: int) -> None:
        procs = [p for p in self._started[mark:]
                 if self.crossbar is None or p is not self.crossbar.process]
        stop_processes(procs, self.stop_waits)
        self.stop_records.extend(record_of(p) for p in procs)
        self.services = {k: s for k, s in self.services.items() if s.process not in procs}
        self.agents = {k: a for k, a in self.agents.items() if a.process not in procs}

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process this stack started, in start order."""
        return list(self._started)

    def stop(self) -> list[StopRecord]:
        """Stop everything this stack started; idempotent.

        Agents and simulators are stopped together first (agents leave the
        realm cleanly while crossbar still runs), then crossbar. Each step is
        SIGINT, SIGTERM, SIGKILL with the bounded ``stop_waits``.

        Returns
        -------
        list of StopRecord
            One per process started, in start order.
        """
        self._closed = True
        crossbar = [self.crossbar.process] if self.crossbar is not None else []
        others = [p for p in self._started if p not in crossbar]
        try:
            stop_processes(others, self.stop_waits)
        finally:
            stop_processes(crossbar, self.stop_waits)
        self.stop_records = [record_of(p) for p in self._started]
        return list(self.stop_records)

    close = stop
