"""SOCS's TCP transports, each replaced by one on socs_tcp connections.

One module per transport, each with ``install()`` (swap SOCS's class or
function for ours; :class:`socs_tcp.compat.CompatError` for a SOCS of another
shape) and ``uninstall()`` (put SOCS's back). ``_registry`` names them;
``_activation`` applies a selection when SOCS's modules are first imported
(``SOCS_TCP`` in the environment, or ``socs-tcp agent``).
"""
