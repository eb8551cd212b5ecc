"""The one-command demo: ``socs-tcp demo``.

- `socs_tcp._demo.run`: the scripted run (outage, recovery, a task, a clean stop);
- `socs_tcp._demo.view`: its terminal output.

It runs on the real-stack harness of `socs_tcp.testing`.
"""
