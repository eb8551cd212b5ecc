"""Sample OCS agents built on socs_tcp (installed as ``socs_tcp.agents``)."""
