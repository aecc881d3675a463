"""``nimctl bench``'s library: load a running server the way NIM users measure one, and keep the figures.

- :mod:`~nimctl.bench.workload`: what is sent (concurrency levels, requests or duration, token counts);
- :mod:`~nimctl.bench.prompts`: prompts of exactly N tokens, built with the server's own ``/tokenize``;
- :mod:`~nimctl.bench.generator`: the load generator (one process, asyncio, a timestamp per chunk);
- :mod:`~nimctl.bench.slo`: ``--slo ttft=200ms,itl=50ms`` read, and checked against one request;
- :mod:`~nimctl.bench.stats`: the figures of one level (TTFT, ITL, latency, throughput, goodput);
- :mod:`~nimctl.bench.server_view`: the server's own view of a level, from ``/v1/metrics``;
- :mod:`~nimctl.bench.events`: what a sweep reports while it runs (for a live view);
- :mod:`~nimctl.bench.sweep`: :func:`~nimctl.bench.sweep.run_sweep`, all of the above over the levels;
- :mod:`~nimctl.bench.history`: every run as one JSON line in the state directory;
- :mod:`~nimctl.bench.compare`: two runs side by side, level by level, with ratios.

A library: no Typer and no printing. Bad input raises :class:`~nimctl.errors.UsageError` with a
hint; a server that cannot be reached or is not ready raises the client's errors (the same exit
codes as ``nimctl health``). Requests that fail during a level are not raised: they are counted
by kind in the level's figures.
"""
