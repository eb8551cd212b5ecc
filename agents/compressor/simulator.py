"""The sample compressor agent's device: a simulated CPA-style compressor.

The compressor is `socs_tcp.sim.devices.cryomech_cpa.CompressorModel`;
`CompressorSimulator` serves its 33-register status block over Modbus-TCP
(function 0x04 reads it, 0x06 writes the power register). It is a
`socs_tcp.sim.DeviceServer`, so every fault of the control channel (drop,
hangup, silent, delay, garbage, stop/start, ...) works on it.
"""

from __future__ import annotations

from socs_tcp.sim import DeviceServer, mbap_framer
from socs_tcp.sim.devices.cryomech_cpa import COMMAND_SET, CompressorModel

__all__ = ['CompressorSimulator']


class CompressorSimulator(DeviceServer):
    """A `DeviceServer` serving a `CompressorModel` over Modbus-TCP.

    Parameters
    ----------
    host : str
        Interface to listen on.
    port : int
        Port (0: pick a free one at `start`).
    model : CompressorModel, optional
        The device state (a default one if not given), kept as ``self.model``.
    """

    command_set = COMMAND_SET

    def __init__(self, host: str = '127.0.0.1', port: int = 0,
                 model: CompressorModel | None = None):
        self.model = model if model is not None else CompressorModel()
        super().__init__(self.model.handle, framer=mbap_framer, host=host, port=port)
