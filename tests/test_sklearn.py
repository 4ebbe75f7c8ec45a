"""fastnn.sklearn: scikit-learn's estimator checks, the training semantics against scikit-learn's
own MLPClassifier / MLPRegressor (same initial weights, losses, L2 term and updates), partial_fit,
warm_start, early stopping, threads under threadpoolctl, Pipeline + GridSearchCV."""
import contextlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.datasets import load_digits, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastnn  # noqa: E402
import fastnn.optimizers  # noqa: E402
import fastnn.sklearn  # noqa: E402
from fastnn import _config  # noqa: E402
from fastnn.sklearn import EXPECTED_FAILED_CHECKS, MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@contextlib.contextmanager
def _quiet():
    """Short fits on purpose: no ConvergenceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


# ---- scikit-learn's own estimator checks ---------------------------------------------------------
# small default-ish settings (scikit-learn's own test suite runs its MLPs with max_iter=100)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(max_iter=100, n_threads=1),
                          MLPRegressor(max_iter=100, n_threads=1)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- the same training as scikit-learn's ---------------------------------------------------------
def _pair(cls_fastnn, cls_sk, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = cls_fastnn(n_threads=1, **kw).fit(X, y)
        b = cls_sk(**kw).fit(X, y)
    return a, b


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression"])
def test_one_sgd_step_equals_sklearn(digits, kind):
    """One full-batch SGD step from the same random_state: scikit-learn's Glorot-uniform
    initialisation, loss (with the L2 term alpha / 2 sum W^2 / n) and gradient, so the loss and
    the updated weights agree to float32 precision."""
    X, y = digits
    X, y = X[:300], y[:300]
    kw = dict(hidden_layer_sizes=(20, 10), solver="sgd", momentum=0.0, learning_rate_init=0.3,
              alpha=0.7, batch_size=300, max_iter=1, shuffle=False, random_state=3,
              activation="tanh")
    if kind == "multiclass":
        pair = _pair(MLPClassifier, sk_nn.MLPClassifier, X, y, **kw)
    elif kind == "binary":
        pair = _pair(MLPClassifier, sk_nn.MLPClassifier, X, y % 2, **kw)
    elif kind == "multilabel":
        Y = np.stack([y % 2, y < 5, y % 3 == 0], axis=1).astype(int)
        pair = _pair(MLPClassifier, sk_nn.MLPClassifier, X, Y, **kw)
    else:
        Y = np.stack([X[:, 20] * 2 - X[:, 30], X[:, 40] ** 2], axis=1)
        pair = _pair(MLPRegressor, sk_nn.MLPRegressor, X, Y, **kw)
    a, b = pair
    assert a.out_activation_ == b.out_activation_
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=2e-6)
    assert len(a.coefs_) == len(b.coefs_) == 3
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert ca.shape == cb.shape and ca.dtype == np.float64
        np.testing.assert_allclose(ca, cb, rtol=0, atol=2e-6)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_epochs_follow_sklearn(digits, solver):
    """Several epochs with shuffling (the same permutations from random_state) and momentum or
    Adam: the loss curves agree with scikit-learn's to float32 round-off."""
    X, y = digits
    kw = dict(hidden_layer_sizes=(32,), max_iter=6, random_state=0, solver=solver,
              activation="tanh", alpha=0.01)
    if solver == "sgd":
        kw["learning_rate_init"] = 0.05
    a, b = _pair(MLPClassifier, sk_nn.MLPClassifier, X, y, **kw)
    assert a.n_iter_ == b.n_iter_ == 6 and a.t_ == b.t_ == 6 * len(X)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)
    assert abs(a.score(X, y) - b.score(X, y)) < 0.01


def test_accuracy_as_sklearn(digits):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    a, b = _pair(MLPClassifier, sk_nn.MLPClassifier, Xtr, ytr, hidden_layer_sizes=(64,),
                 max_iter=40, random_state=0)
    assert a.score(Xte, yte) > 0.93
    assert a.score(Xte, yte) >= b.score(Xte, yte) - 0.02


def test_regressor_fits_a_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (500, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    reg = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=300, random_state=0,
                       learning_rate_init=0.01, n_threads=1).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (500,) and pred.dtype == np.float64
    assert reg.score(X, y) > 0.95
    Y = np.stack([y, -y], axis=1)
    with _quiet():
        reg2 = MLPRegressor(hidden_layer_sizes=(32,), max_iter=20, random_state=0,
                            n_threads=1).fit(X, Y)
    assert reg2.predict(X).shape == (500, 2) and reg2.n_outputs_ == 2


# ---- the classifier's outputs --------------------------------------------------------------------
def test_predict_proba_and_labels(digits):
    X, y = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                       "nine"])[y]
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=15, random_state=0,
                            n_threads=1).fit(X, labels)
    assert list(clf.classes_) == sorted(set(labels))
    p = clf.predict_proba(X[:50])
    assert p.shape == (50, 10) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(clf.classes_[p.argmax(axis=1)], clf.predict(X[:50]))
    np.testing.assert_allclose(clf.predict_log_proba(X[:50]), np.log(p))
    # binary: one logistic output, probabilities [1 - p, p]
    with _quiet():
        b = MLPClassifier(hidden_layer_sizes=(16,), max_iter=10, random_state=0,
                          n_threads=1).fit(X, y > 4)
    pb = b.predict_proba(X[:20])
    assert pb.shape == (20, 2) and b.n_outputs_ == 1 and b.out_activation_ == "logistic"
    np.testing.assert_array_equal(b.predict(X[:20]), b.classes_[(pb[:, 1] > 0.5).astype(int)])


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4,
                                          random_state=0)
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0,
                            n_threads=1).fit(X, Y)
    ref = sk_nn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0)
    with _quiet():
        ref.fit(X, Y)
    assert clf.predict(X).shape == (300, 4) and clf.predict_proba(X).shape == (300, 4)
    # subset accuracy: far above chance (1/16), as scikit-learn's
    assert clf.score(X, Y) > 0.3 and abs(clf.score(X, Y) - ref.score(X, Y)) < 0.05


def test_sparse_input_equals_dense(digits):
    import scipy.sparse as sp
    X, y = digits
    with _quiet():
        a = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                          n_threads=1).fit(X, y)
        b = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                          n_threads=1).fit(
            sp.csr_matrix(X), y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(sp.csr_matrix(X)))


def test_pickle_round_trip(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0,
                            n_threads=1).fit(X, y)
    clf2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf.predict_proba(X), clf2.predict_proba(X))
    clf2.partial_fit(X, y)  # the copy trains on


# ---- partial_fit, warm_start, stopping -----------------------------------------------------------
def test_partial_fit_equals_fit_without_shuffle(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(16,), shuffle=False, random_state=0, n_threads=1)
    with _quiet():
        full = MLPClassifier(max_iter=3, **kw).fit(X, y)
    inc = MLPClassifier(**kw)
    with pytest.raises(ValueError, match="classes must be passed"):
        inc.partial_fit(X, y)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.arange(10))
    assert inc.n_iter_ == 1 and len(inc.loss_curve_) == 3
    np.testing.assert_array_equal(inc.loss_curve_, full.loss_curve_)
    for a, b in zip(inc.coefs_, full.coefs_):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        MLPClassifier(**kw).partial_fit(X, y, classes=np.arange(5))
    reg = MLPRegressor(**kw)
    reg.partial_fit(X, y.astype(float))
    reg.partial_fit(X, y.astype(float))
    assert len(reg.loss_curve_) == 2 and reg.loss_curve_[1] < reg.loss_curve_[0]


def test_warm_start_continues(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0,
                            warm_start=True, n_threads=1).fit(X, y)
        first = clf.coefs_[0].copy()
        clf.fit(X, y)
    assert len(clf.loss_curve_) == 4 and clf.loss_curve_[3] < clf.loss_curve_[1]
    assert not np.array_equal(first, clf.coefs_[0])
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X[y < 5], y[y < 5])
    with pytest.raises(ValueError, match="hidden layers"):
        clf.set_params(hidden_layer_sizes=(8,)).fit(X, y)


def test_convergence_warning_and_tol_stop(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0,
                      n_threads=1).fit(X, y)
    # a huge tol: no epoch after the first improves by it, so training stops once
    # n_iter_no_change + 1 epochs in a row did not (as scikit-learn's)
    kw = dict(hidden_layer_sizes=(8,), max_iter=50, tol=10.0, n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(n_threads=1, **kw).fit(X, y)
        ref = sk_nn.MLPClassifier(**kw).fit(X, y)
    assert clf.n_iter_ == ref.n_iter_ == 5


def test_early_stopping_keeps_best(digits):
    X, y = digits
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, early_stopping=True,
                            n_iter_no_change=3, random_state=0, validation_fraction=0.2,
                            learning_rate_init=0.01, n_threads=1).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ < 60
    assert clf.best_validation_score_ == max(scores) > 0.9
    # the weights kept are the best epoch's: the held-out split (same random_state draws as fit)
    Xtr, Xval, ytr, yval = train_test_split(
        X, y, random_state=_split_state(clf), test_size=0.2, stratify=y)
    assert clf.score(Xval, yval) == pytest.approx(clf.best_validation_score_)
    with pytest.raises(ValueError, match="early_stopping"):
        clf.partial_fit(X, y)


def _split_state(clf):
    """The RandomState as fit had it at the split: after the initial weights' draws."""
    from sklearn.utils import check_random_state
    rs = check_random_state(clf.random_state)
    for W in clf.coefs_:
        rs.uniform(size=W.shape)
        rs.uniform(size=W.shape[1])
    return rs


@pytest.mark.parametrize("kw, match", [
    (dict(solver="lbfgs"), "solver"), (dict(activation="gelu"), "activation"),
    (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"), (dict(dropout=1.0), "dropout"),
    (dict(momentum=1.0), "momentum"), (dict(batch_size=0), "batch_size"),
    (dict(n_threads=0), "n_threads"), (dict(learning_rate="cosine"), "learning_rate"),
    (dict(validation_fraction=1.0), "validation_fraction")])
def test_bad_parameters_raise(digits, kw, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**kw).fit(X[:50], y[:50])


def test_bad_parameter_types_raise(digits):
    X, y = digits
    with pytest.raises(TypeError, match="alpha"):
        MLPClassifier(alpha="big").fit(X[:50], y[:50])
    with pytest.raises(TypeError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(10.5,)).fit(X[:50], y[:50])


# ---- fastnn's additions: dropout, threads --------------------------------------------------------
def test_dropout_reproducible_and_thread_count_invariant(digits):
    X, y = digits
    kw = dict(hidden_layer_sizes=(32, 16), dropout=0.3, max_iter=10, random_state=0,
              learning_rate_init=0.01)
    with _quiet():
        a = MLPClassifier(n_threads=1, **kw).fit(X, y)
        b = MLPClassifier(n_threads=2, **kw).fit(X, y)
        c = MLPClassifier(n_threads=1, **{**kw, "dropout": 0.0}).fit(X, y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    assert a.score(X, y) > 0.8


@pytest.fixture
def thread_spy(monkeypatch):
    """The thread count each optimizer step ran with."""
    seen = []
    real = fastnn.optimizers.get_num_threads

    def spy():
        n = real()
        seen.append(n)
        return n

    monkeypatch.setattr(fastnn.optimizers, "get_num_threads", spy)
    return seen


def test_threads_follow_threadpoolctl_and_n_threads(digits, thread_spy, monkeypatch):
    X, y = digits
    before = _config._num_threads
    kw = dict(hidden_layer_sizes=(8,), max_iter=1)
    with _quiet():
        with threadpool_limits(limits=1, user_api="openmp"):
            MLPClassifier(**kw).fit(X, y)
            MLPClassifier(n_threads=2, **kw).fit(X, y)  # capped by the limit in force
        assert set(thread_spy) == {1}
        thread_spy.clear()
        MLPClassifier(n_threads=1, **kw).fit(X, y)
        assert set(thread_spy) == {1}
        if _config._threads.openmp_enabled() and _config._threads.omp_max_threads() >= 2:
            thread_spy.clear()
            MLPClassifier(n_threads=2, **kw).fit(X, y)
            # 2 threads, or 1 for a while if the thread tuning finds 1 faster (a busy machine)
            assert set(thread_spy) <= {1, 2}
            # without the tuning's probes and switches: 2 throughout
            thread_spy.clear()
            monkeypatch.setattr(fastnn.sklearn, "_TUNERS", {})
            monkeypatch.setattr(_config.ThreadTuner, "step_done", lambda self, seconds: None)
            MLPClassifier(n_threads=2, **kw).fit(X, y)
            assert set(thread_spy) == {2}
    assert _config._num_threads == before  # the user's setting is left as it was


def test_pipeline_in_grid_search(digits):
    """Pipeline(StandardScaler, MLPClassifier) in GridSearchCV over two parameters."""
    X, y = digits
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(max_iter=30, random_state=0))])
    grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(16,), (64,)],
                               "mlp__alpha": [1e-4, 1.0]}, cv=3, n_jobs=1)
    with _quiet():
        grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["mlp__hidden_layer_sizes"] == (64,)
    assert grid.best_score_ > 0.9
    assert grid.score(X, y) > 0.95


def test_import_fastnn_does_not_import_sklearn():
    code = "import sys, fastnn; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
