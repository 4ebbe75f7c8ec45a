"""fastnn's benchmarks: ``python -m bench`` (see :mod:`bench.run`).

Layout: ``run.py`` is the driver (options, interleaving, statistics, table, JSON); ``_worker.py``
is the per-(implementation, threads) worker process; ``models.py`` holds the model specs and
their useful FLOP counts; ``<impl>_<model>.py`` builds one train step of one model for one
implementation (``numpy_mlp.py``, ``fastnn_mlp.py``, ``torch_mlp.py``). Results go to
``bench/results/<model>.json``.
"""
