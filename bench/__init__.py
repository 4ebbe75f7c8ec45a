"""fastnn's benchmarks: ``python -m bench`` (see :mod:`bench.run`).

Layout: ``run.py`` is the driver (options, interleaving, statistics, tables, JSON); ``_worker.py``
is the per-(implementation, threads) worker process; ``models.py`` holds the network specs (the
MLP, the small Fashion-MNIST CNN, the DQN), their batch sizes, useful FLOP counts and GEMM lists;
``<impl>_<kind>.py`` builds one train step (``build``) and one inference call
(``build_predict``) of one kind of network for one implementation (``numpy_mlp.py``,
``fastnn_mlp.py``, ``torch_mlp.py``; ``numpy_cnn.py``, ``fastnn_cnn.py``, ``torch_cnn.py`` for
any stack of conv / max-pool / flatten / dense layers); ``sgemm_mlp.py`` and ``sgemm_cnn.py``
(``_sgemm.py``) are the roofline, the same steps' GEMMs alone; ``chart.py`` draws the PNG chart
(matplotlib, optional). Results go to ``bench/results/<net>.json`` and ``<net>.png``.
"""
