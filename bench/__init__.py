"""fastnn's benchmarks: ``python -m bench`` (see :mod:`bench.run`).

Layout: ``run.py`` is the driver (options, worker processes, interleaving, JSON); ``report.py``
turns its measured rows into statistics and markdown tables (quartiles, ratios to fastnn, % of
the roofline, per-layer GFLOP/s); ``_worker.py`` is the per-(implementation, threads) worker
process; ``models.py`` holds the network specs (the MLP, the small Fashion-MNIST CNN, the DQN:
stacks of conv / max-pool / flatten / dense layers, an MLP being dense layers only), their batch
sizes, useful FLOP counts and GEMM lists; ``<impl>_net.py`` builds one train step (``build``)
and one inference call (``build_predict``) of any spec for one implementation (``numpy_net.py``,
``fastnn_net.py``, ``torch_net.py``); ``_sgemm.py`` is the roofline, the same steps' GEMMs
alone; ``chart.py`` draws the PNG chart (matplotlib, optional). Results go to
``bench/results/<net>.json`` and ``<net>.png``.
"""
