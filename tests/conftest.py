"""Per-test state resets of fastnn's tests: the fixtures below apply to every test."""
import signal

import pytest

import fastnn


# ---- process-wide state: reset around every test ---------------------------------------------

@pytest.fixture(autouse=True)
def _reset_fastnn_state():
    """Undo what tests set process-wide in fastnn: the thread count and the kernels' test hooks
    (forced convolution path, tiled max-pool backward switched off)."""
    yield
    from fastnn import _conv

    fastnn.set_num_threads(None)
    _conv._force_path(None)
    _conv._disable_tiled_pool_backward(False)


@pytest.fixture(autouse=True)
def _default_sigint():
    """Every test starts with Python's default SIGINT handler (KeyboardInterrupt), whatever the
    suite was started under (``nohup`` or a shell background job ignore SIGINT); the previous
    handler is restored afterwards."""
    if not hasattr(signal, "SIGINT"):  # pragma: no cover
        yield
        return
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if old is not None:  # None: a handler not installed from Python, cannot be put back
            signal.signal(signal.SIGINT, old)
