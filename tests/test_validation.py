"""User-input checks (fastnn/_validation.py) through the public API: every bad input raises a
TypeError/ValueError naming the argument before anything runs; every acceptable layout gives the
same result as a contiguous float copy."""
import numpy as np
import pytest

from fastnn import (SGD, Activation, BinaryCrossEntropy, Dense, EarlyStopping, MeanSquaredError,
                    Sequential, SoftmaxCrossEntropy)


def make(dtype="float32", loss=None, k=3):
    m = Sequential([Dense(4, 8, activation="relu"), Dense(8, k)], dtype=dtype, seed=0)
    return m.compile(SGD(0.1, momentum=0.9), loss or SoftmaxCrossEntropy())


def data(n=48, seed=0, k=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, k, size=n)


def weights(m):
    return [p for layer in m.get_weights() for p in layer.values()]


def assert_untouched(m, before):
    assert all(np.array_equal(a, b) for a, b in zip(weights(m), before))
    assert m.optimizer.iterations == 0 and m.optimizer.state == {}


def all_calls(m, X, y):
    """fit, train_on_batch, evaluate with (X, y); predict with X."""
    return [lambda: m.fit(X, y, batch_size=4, verbose=0), lambda: m.train_on_batch(X, y),
            lambda: m.evaluate(X, y)]


# -- X --------------------------------------------------------------------------------------------
BAD_X_VALUES = {
    "wrong-features": (np.zeros((6, 5)), r"X must have shape \(N, 4\), got \(6, 5\)"),
    "1-d": (np.zeros(4), "X must have 2 dimensions, got 1"),
    "5-d": (np.zeros((2, 4, 1, 1, 1)), "X must have 2 dimensions, got 5"),
    "empty": (np.zeros((0, 4)), "X is empty"),
    "nan": (np.array([[0, 1, np.nan, 2.0]] * 6), "X contains NaN or inf"),
    "inf": (np.array([[0, 1, -np.inf, 2.0]] * 6), "X contains NaN or inf"),
}


@pytest.mark.parametrize("case", sorted(BAD_X_VALUES))
def test_bad_X_raises_value_error_naming_X(case):
    X, msg = BAD_X_VALUES[case]
    m = make()
    before = weights(m)
    y = np.zeros(len(X) if X.ndim else 1, dtype=int)
    for call in all_calls(m, X, y) + [lambda: m.predict(X), lambda: m.predict_proba(X)]:
        with pytest.raises(ValueError, match=msg):
            call()
    assert_untouched(m, before)


BAD_X_TYPES = {
    "object": np.array([[1, 2, 3, None]] * 6, dtype=object),
    "string": np.array([["1", "2", "3", "4"]] * 6),
    "bool": np.ones((6, 4), dtype=bool),
    "complex": np.ones((6, 4), dtype=complex),
    "float16": np.ones((6, 4), dtype=np.float16),
    "datetime": np.zeros((6, 4), dtype="datetime64[s]"),
}


@pytest.mark.parametrize("case", sorted(BAD_X_TYPES))
def test_bad_X_dtype_raises_type_error_naming_X(case):
    X = BAD_X_TYPES[case]
    m = make()
    before = weights(m)
    y = np.zeros(6, dtype=int)
    for call in all_calls(m, X, y) + [lambda: m.predict(X)]:
        with pytest.raises(TypeError, match="X"):
            call()
    if case == "float16":
        with pytest.raises(TypeError, match="float16"):
            m.predict(X)
    assert_untouched(m, before)


def test_ragged_X_raises_value_error_in_fastnns_words():
    with pytest.raises(ValueError, match=r"X is ragged: rows of lengths \[2, 4\]") as err:
        make().predict([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])
    assert "inhomogeneous" not in str(err.value)  # not numpy's internal text


def test_validation_data_X_is_named():
    X, y = data()
    m = make()
    with pytest.raises(ValueError, match=r"validation_data\[0\]"):
        m.fit(X, y, validation_data=(np.zeros((3, 5)), y[:3]), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\].*NaN"):
        m.fit(X, y, validation_data=(np.full((3, 4), np.nan), y[:3]), verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        m.fit(X, y, validation_data=X, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        m.fit(X, y, validation_data=(X, y, y), verbose=0)


def test_validation_data_y_is_named():
    X, y = data()
    with pytest.raises(ValueError, match=r"validation_data\[1\]"):
        make().fit(X, y, validation_data=(X[:10], y[:9]), verbose=0)


# -- y ------------------------------------------------------------------------------------------
BAD_Y = {
    "short": (np.zeros(47, dtype=int), "y has 47 labels but X has 48 samples"),
    "long": (np.zeros(49, dtype=int), "y has 49 labels but X has 48 samples"),
    "not-one-hot-values": (np.full((48, 3), 0.5), "not one-hot"),
    "not-one-hot-two-ones": (np.ones((48, 3), dtype=int), "not one-hot"),
    "2d-wrong-width": (np.zeros((48, 4), dtype=int), r"y must have shape \(48,\)"),
    "3d": (np.zeros((48, 3, 1), dtype=int), r"y must have shape \(48,\)"),
    "fractions": (np.full(48, 1.5), "fractional"),
    "nan": (np.full(48, np.nan), "y contains NaN"),
    "too-large": (np.full(48, 3), r"y must be in \[0, 3\), got values in \[3, 3\]"),
    "negative": (np.full(48, -1), r"y must be in \[0, 3\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_Y))
def test_bad_labels_raise_value_error_naming_y(case):
    y, msg = BAD_Y[case]
    X, _ = data()
    m = make()
    before = weights(m)
    for call in all_calls(m, X, y):
        with pytest.raises(ValueError, match=msg):
            call()
    assert_untouched(m, before)


@pytest.mark.parametrize("y", [np.array(["a"] * 48), np.zeros(48, dtype=bool),
                               np.array([None] * 48), np.zeros(48, dtype=complex)],
                         ids=["str", "bool", "object", "complex"])
def test_bad_label_dtype_raises_type_error_naming_y(y):
    X, _ = data()
    m = make()
    with pytest.raises(TypeError, match="y"):
        m.fit(X, y, verbose=0)
    with pytest.raises(TypeError, match="y"):
        m.evaluate(X, y)


def test_y_not_an_array_raises():
    X, _ = data()
    with pytest.raises(TypeError, match="y"):
        make().fit(X, 3, verbose=0)


def test_labels_accepted_forms_train_identically():
    X, y = data()
    ref = make()
    ref.fit(X, y, batch_size=4, verbose=0)
    for form in (y.astype(np.int32), y.astype(np.uint8), y.astype(np.float64), list(y),
                 np.eye(3)[y], np.eye(3, dtype=np.int8)[y], y[:, None]):
        m = make()
        m.fit(X, form, batch_size=4, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(weights(m), weights(ref)))


def test_bce_and_mse_targets_checked():
    X, _ = data()
    m = make(loss=BinaryCrossEntropy(), k=1)
    with pytest.raises(ValueError, match=r"y must have shape \(48, 1\) or \(48,\)"):
        m.fit(X, np.zeros(47), verbose=0)
    with pytest.raises(ValueError, match=r"y must be in \[0, 1\]"):
        m.fit(X, np.full(48, 2.0), verbose=0)
    with pytest.raises(ValueError, match="y contains NaN"):
        m.fit(X, np.full(48, np.nan), verbose=0)
    m = make(loss=MeanSquaredError(), k=2)
    with pytest.raises(ValueError, match=r"y must have shape \(48, 2\)"):
        m.fit(X, np.zeros(48), verbose=0)
    with pytest.raises(TypeError, match="y"):
        m.fit(X, np.array([["a", "b"]] * 48), verbose=0)


# -- accepted X layouts and dtypes ----------------------------------------------------------------
def _layouts(X):
    big = np.zeros((X.shape[0], 2 * X.shape[1]))
    big[:, ::2] = X
    ro = X.copy()
    ro.flags.writeable = False
    rev = np.ascontiguousarray(X[::-1])[::-1]  # negative row stride, same values as X
    negcol = np.ascontiguousarray(X[:, ::-1])[:, ::-1]  # negative column stride
    return {"strided": big[:, ::2], "fortran": np.asfortranarray(X), "negative-rows": rev,
            "negative-cols": negcol, "read-only": ro, "list": X.tolist()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_any_layout_gives_same_results_as_contiguous_copy(dtype):
    X, y = data(40)
    X = X.astype(dtype)
    ref = make(dtype)
    ref_pred = ref.predict(X)
    ref_eval = ref.evaluate(X, y)
    ref.fit(X, y, batch_size=8, epochs=2, verbose=0)
    for name, Xl in _layouts(X).items():
        if not isinstance(Xl, list):
            assert not Xl.flags.c_contiguous or not Xl.flags.writeable, name
            assert np.array_equal(Xl, X)
        m = make(dtype)
        assert np.array_equal(m.predict(Xl), ref_pred), name
        assert m.evaluate(Xl, y) == ref_eval, name
        m.fit(Xl, y, batch_size=8, epochs=2, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(weights(m), weights(ref))), name
    ro = _layouts(X)["read-only"]
    assert not ro.flags.writeable  # the caller's array was not modified or made writeable


def test_float64_X_to_float32_model_and_int_X():
    X, y = data(40)
    X32 = X.astype(np.float32)
    m, ref = make("float32"), make("float32")
    out = m.predict(X)
    assert out.dtype == np.float32
    assert np.array_equal(out, ref.predict(X32))
    m.fit(X, y, batch_size=8, verbose=0)
    ref.fit(X32, y, batch_size=8, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights(m), weights(ref)))
    Xi = np.round(X * 3).astype(np.int64)
    for dt in (np.int8, np.int32, np.int64, np.uint8):
        Xc = np.abs(Xi).astype(dt) if dt == np.uint8 else Xi.astype(dt)
        assert np.array_equal(make("float64").predict(Xc),
                              make("float64").predict(Xc.astype(np.float64)))


# -- scalar arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("bs", [0, -1])
def test_bad_batch_size_raises(bs):
    X, y = data()
    m = make()
    before = weights(m)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(X, y, batch_size=bs, verbose=0)
    assert_untouched(m, before)
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(X, batch_size=bs)
    with pytest.raises(ValueError, match="batch_size"):
        m.evaluate(X, y, batch_size=bs)


def test_batch_size_equal_to_data_and_larger_for_inference():
    X, y = data()
    m = make()
    h = m.fit(X, y, batch_size=48, epochs=3, verbose=0)
    assert m.optimizer.iterations == 3 and len(h.epoch) == 3
    assert np.array_equal(m.predict(X, batch_size=1000), m.predict(X))


@pytest.mark.parametrize("bad", [4.0, "4", None, True])
def test_non_int_batch_size_or_epochs_raise_type_error(bad):
    X, y = data()
    m = make()
    with pytest.raises(TypeError, match="batch_size"):
        m.fit(X, y, batch_size=bad, verbose=0)
    with pytest.raises(TypeError, match="epochs"):
        m.fit(X, y, epochs=bad, verbose=0)


@pytest.mark.parametrize("epochs", [0, -1])
def test_bad_epochs_raise(epochs):
    X, y = data()
    m = make()
    before = weights(m)
    with pytest.raises(ValueError, match="epochs"):
        m.fit(X, y, epochs=epochs, verbose=0)
    assert_untouched(m, before)


def test_other_fit_arguments_checked():
    X, y = data()
    m = make()
    before = weights(m)
    with pytest.raises(ValueError, match="verbose"):
        m.fit(X, y, verbose=3)
    with pytest.raises(ValueError, match="on_nan"):
        m.fit(X, y, on_nan="ignore", verbose=0)
    with pytest.raises(ValueError, match="initial_epoch"):
        m.fit(X, y, initial_epoch=-1, verbose=0)
    with pytest.raises(TypeError, match="callbacks"):
        m.fit(X, y, callbacks=["early"], verbose=0)
    assert_untouched(m, before)
    # a callback whose monitored key never appears is reported by name
    with pytest.raises(ValueError, match="monitors 'val_loss', which fit will not log"):
        m.fit(X, y, callbacks=[EarlyStopping("val_loss")], verbose=0)


# -- compile state ------------------------------------------------------------------------------
def test_predict_before_compile_works_evaluate_and_fit_raise():
    X, y = data()
    m = Sequential([Dense(4, 3, activation="softmax")], dtype="float64", seed=0)
    out = m.predict(X)
    W, b = m.layers[0].weight, m.layers[0].bias
    Z = X @ W + b
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, E / E.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(m.predict_classes(X), out.argmax(axis=1))
    with pytest.raises(RuntimeError, match="compile"):
        m.evaluate(X, y)
    with pytest.raises(RuntimeError, match="compile"):
        m.fit(X, y, verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        m.train_on_batch(X, y)


def test_model_without_known_input_shape_still_checks_X():
    # the first layer (an Activation) does not fix the input shape: the layers check it instead
    m = Sequential([Activation("tanh"), Dense(4, 3)], seed=0)
    for X, msg in ((np.zeros((5, 5)), r"X of shape \(5, 5\) does not fit the model: layer 1"),
                   (np.zeros(4), "X must be batch-first"),
                   (np.zeros((5, 4, 1)), r"X of shape \(5, 4, 1\) does not fit")):
        with pytest.raises(ValueError, match=msg):
            m.predict(X)
    X, _ = data(5)
    np.testing.assert_allclose(m.predict(X), np.tanh(X) @ m.layers[1].weight + m.layers[1].bias,
                               rtol=1e-5, atol=1e-6)


def test_check_finite_opt_out():
    import fastnn
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    X[0, 1] = np.nan
    m = fastnn.Sequential([fastnn.Dense(3, 2)], seed=0).compile(fastnn.SGD(0.1),
                                                              fastnn.SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match="NaN or inf"):
        m.predict(X)
    out = m.predict(X, check_finite=False)
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()
    with pytest.raises(ValueError, match="NaN or inf"):
        m.fit(X, y, epochs=1, batch_size=8, verbose=0)
    # opted out: the NaN reaches the loss, which stops training before the bad step
    before = m.get_weights()
    with pytest.raises(FloatingPointError, match="epoch 1"):
        m.fit(X, y, epochs=1, batch_size=40, verbose=0, shuffle=False, check_finite=False)
    np.testing.assert_array_equal(before[0]["weight"], m.layers[0].params["weight"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_is_exact_including_overflow(dtype):
    """The one-pass check (a . a) decides like np.isfinite: NaN and both infinities anywhere are
    found, and finite values whose squares overflow are still finite (the fallback)."""
    from fastnn._validation import all_finite
    big = np.finfo(dtype).max
    a = np.linspace(-3, 3, 1001).astype(dtype).reshape(7, 11, 13)
    assert all_finite(a)
    assert all_finite(np.full((4, 5), big, dtype))  # the sum of squares overflows
    for bad in (np.nan, np.inf, -np.inf):
        for i in (0, 500, a.size - 1):
            b = a.copy()
            b.flat[i] = bad
            assert not all_finite(b)
    b = np.full((4, 5), big, dtype)
    b[3, 4] = np.nan
    assert not all_finite(b)
