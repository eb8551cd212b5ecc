"""OCS agent for a pulse-tube compressor (Cryomech CPA style, Modbus-TCP).

Tasks ``init`` (identify the compressor) and ``power`` (switch it on or off);
process ``acq`` publishes temperatures, pressures, motor current and the
operating state to the recorded feed ``compressor``. The acquisition loop,
lock and degraded-session handling are shared with the power supply agent
(see `socs_tcp.agents.polled_device`).

Run with ``ocs-agent-cli --instance-id ID`` (agent-class ``CompressorAgent``).
"""

from __future__ import annotations

import argparse

from ocs import ocs_agent, site_config

from socs_tcp.agents.arguments import add_device_arguments
from socs_tcp.agents.compressor.drivers import OPERATING_STATES, Compressor
from socs_tcp.agents.polled_device import PolledDeviceAgent

#: Identity fields: published once by ``init``, not on every sample.
IDENTITY_FIELDS = ('model', 'software_revision', 'serial_number')


class CompressorAgent(PolledDeviceAgent):
    """Agent for one compressor.

    Parameters
    ----------
    agent : ocs.ocs_agent.OCSAgent
        The OCS agent.
    ip_address : str
        The compressor's address.
    port : int
        Its Modbus-TCP port.
    timeout : float
        Seconds one exchange may take.
    sample_interval : float
        Seconds between samples of ``acq``.
    """

    feed_name = 'compressor'
    device_kind = 'compressor'

    def __init__(self, agent, ip_address, port=502, timeout=5.0, sample_interval=1.0):
        super().__init__(agent, ip_address, port, timeout, sample_interval)
        self.identity: dict = {}

    def make_device(self) -> Compressor:
        return Compressor(self.ip_address, self.port, self.timeout)

    def read_sample(self, device: Compressor) -> dict:
        data = device.get_data()
        fields = {k: v for k, v in data.items() if k not in IDENTITY_FIELDS}
        fields['operating_state_name'] = OPERATING_STATES.get(
            data['operating_state'], f'unknown ({data["operating_state"]})')
        return fields

    def init(self, session, params=None):
        """init()

        **Task** - Identify the compressor: model, serial number and software
        revision (also left in ``session.data``).
        """
        def identify(device: Compressor) -> str:
            self.identity = device.identify()
            session.data = dict(self.identity)
            return (f'Compressor model {self.identity["model"]}, serial '
                    f'{self.identity["serial"]}, software revision '
                    f'{self.identity["software_revision"]}')

        return self.run_task('init', identify)

    @ocs_agent.param('state', type=str, cast=str.lower, choices=['on', 'off'])
    def power(self, session, params):
        """power(state)

        **Task** - Switch the compressor on or off.

        Parameters
        ----------
        state : str
            'on' or 'off'.
        """
        state = params['state']

        def switch(device: Compressor) -> str:
            device.power(state)
            return f'Compressor powered {state}'

        return self.run_task('power', switch)


def make_parser(parser=None):
    """Build the argument parser (also used by Sphinx to document the arguments)."""
    if parser is None:
        parser = argparse.ArgumentParser()
    pgroup = parser.add_argument_group('Agent Options')
    add_device_arguments(pgroup, default_port=502)
    return parser


def main(args=None):
    parser = make_parser()
    args = site_config.parse_args(agent_class='CompressorAgent', parser=parser, args=args)
    agent, runner = ocs_agent.init_site_agent(args)
    compressor = CompressorAgent(agent, args.ip_address, args.port, args.timeout,
                                 args.sample_interval)
    agent.register_task('init', compressor.init)
    agent.register_task('power', compressor.power)
    agent.register_process('acq', compressor.acq, compressor._stop_acq,
                           startup=args.mode == 'acq')
    runner.run(agent, auto_reconnect=True)


if __name__ == '__main__':
    main()
