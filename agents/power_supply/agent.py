"""OCS agent for a single-channel SCPI power supply.

Tasks ``init`` (identify), ``set_voltage``, ``set_current`` and
``set_output``; process ``acq`` publishes measured and programmed voltage and
current and the output state to the recorded feed ``psu``. Set points are
validated against the supply's range before anything is sent, and every
setting is confirmed through the supply's error queue. The acquisition loop,
lock and degraded-session handling are shared with the compressor agent (see
`socs_tcp.agents.polled_device`).

Run with ``ocs-agent-cli --instance-id ID`` (agent-class ``PowerSupplyAgent``).
"""

from __future__ import annotations

import argparse

from ocs import ocs_agent, site_config

from socs_tcp.agents.arguments import add_device_arguments
from socs_tcp.agents.errors import DeviceReportedError
from socs_tcp.agents.polled_device import PolledDeviceAgent
from socs_tcp.agents.power_supply.drivers import CURRENT_LIMIT, VOLTAGE_LIMIT, PowerSupply


class PowerSupplyAgent(PolledDeviceAgent):
    """Agent for one power supply.

    Parameters
    ----------
    agent : ocs.ocs_agent.OCSAgent
        The OCS agent.
    ip_address : str
        The supply's address.
    port : int
        Its SCPI socket port.
    timeout : float
        Seconds one exchange may take.
    sample_interval : float
        Seconds between samples of ``acq``.
    """

    feed_name = 'psu'
    device_kind = 'power supply'

    def __init__(self, agent, ip_address, port=5025, timeout=5.0, sample_interval=1.0):
        super().__init__(agent, ip_address, port, timeout, sample_interval)
        self.identity: dict = {}

    def make_device(self) -> PowerSupply:
        return PowerSupply(self.ip_address, self.port, self.timeout)

    def read_sample(self, device: PowerSupply) -> dict:
        return device.get_data()

    def init(self, session, params=None):
        """init()

        **Task** - Identify the supply (``*IDN?``) and clear its error queue.
        The identity is left in ``session.data``.
        """
        def identify(device: PowerSupply) -> str:
            self.identity = device.identify()
            try:
                device.check_errors()   # start from an empty queue
            except DeviceReportedError as exc:
                self.log.info('Cleared old errors from the supply: {errors}', errors=exc.errors)
            session.data = dict(self.identity)
            return ('Power supply {manufacturer} {model}, serial {serial}, '
                    'firmware {firmware}'.format(**self.identity))

        return self.run_task('init', identify)

    @ocs_agent.param('voltage', type=float, check=lambda v: 0 <= v <= VOLTAGE_LIMIT)
    def set_voltage(self, session, params):
        """set_voltage(voltage)

        **Task** - Program the output voltage.

        Parameters
        ----------
        voltage : float
            Volts, 0 to 30.
        """
        volts = params['voltage']

        def apply(device: PowerSupply) -> str:
            device.set_voltage(volts)
            return f'Voltage set to {volts:g} V'

        return self.run_task('set_voltage', apply)

    @ocs_agent.param('current', type=float, check=lambda a: 0 <= a <= CURRENT_LIMIT)
    def set_current(self, session, params):
        """set_current(current)

        **Task** - Program the current limit.

        Parameters
        ----------
        current : float
            Amperes, 0 to 5.
        """
        amps = params['current']

        def apply(device: PowerSupply) -> str:
            device.set_current(amps)
            return f'Current limit set to {amps:g} A'

        return self.run_task('set_current', apply)

    @ocs_agent.param('state', type=str, cast=str.lower, choices=['on', 'off'])
    def set_output(self, session, params):
        """set_output(state)

        **Task** - Switch the output on or off.

        Parameters
        ----------
        state : str
            'on' or 'off'.
        """
        state = params['state']

        def apply(device: PowerSupply) -> str:
            device.set_output(state == 'on')
            return f'Output switched {state}'

        return self.run_task('set_output', apply)


def make_parser(parser=None):
    """Build the argument parser (also used by Sphinx to document the arguments)."""
    if parser is None:
        parser = argparse.ArgumentParser()
    pgroup = parser.add_argument_group('Agent Options')
    add_device_arguments(pgroup, default_port=5025)
    return parser


def main(args=None):
    parser = make_parser()
    args = site_config.parse_args(agent_class='PowerSupplyAgent', parser=parser, args=args)
    agent, runner = ocs_agent.init_site_agent(args)
    psu = PowerSupplyAgent(agent, args.ip_address, args.port, args.timeout,
                           args.sample_interval)
    agent.register_task('init', psu.init)
    agent.register_task('set_voltage', psu.set_voltage)
    agent.register_task('set_current', psu.set_current)
    agent.register_task('set_output', psu.set_output)
    agent.register_process('acq', psu.acq, psu._stop_acq, startup=args.mode == 'acq')
    runner.run(agent, auto_reconnect=True)


if __name__ == '__main__':
    main()
