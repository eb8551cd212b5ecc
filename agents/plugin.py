"""OCS plugin: lets ``ocs-agent-cli`` find the sample agents by agent-class."""

package_name = 'socs_tcp'
agents = {
    'CompressorAgent': {'module': 'socs_tcp.agents.compressor.agent', 'entry_point': 'main'},
    'PowerSupplyAgent': {'module': 'socs_tcp.agents.power_supply.agent', 'entry_point': 'main'},
}
