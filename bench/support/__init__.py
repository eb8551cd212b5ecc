"""What serves the measurements in ``bench/``: never a figure by itself.

- `support.devices`: simulated devices in another process, and their fault control;
- `support.clients`: the three ways a driver talks to a device (raw, socs.tcp, socs_tcp);
- `support.percentiles`: percentile and median;
- `support.targets`: each figure next to its target, PASS or FAIL;
- `support.report` and `support.figure`: the text tables and the PNG.

The scripts beside this folder measure (``compare.py``, ``query_latency.py``,
``soak.py``; ``fault_timing.py`` and ``scale_usage.py`` for ``compare.py``).
"""
