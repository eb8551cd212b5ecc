"""The one-command demo and the OCS stack harness it runs on.

- `socs_tcp.demo.stack.OcsStack`: crossbar, simulators and agents
  (``ocs-agent-cli``) on 127.0.0.1, all stopped on exit; used by the demo and
  the end-to-end tests.
- `socs_tcp.demo.run`: ``socs-tcp demo``.
"""
