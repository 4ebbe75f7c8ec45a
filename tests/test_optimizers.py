"""SGD, Adam, AdamW, RMSprop and Adagrad against NumPy re-implementations of the torch.optim
formulas over several steps; gradient clipping against torch.nn.utils.clip_grad_norm_ /
clip_grad_value_ written in NumPy; learning-rate schedules per step; save/load."""
import json
import math

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Activation, Adagrad, Adam, AdamW, Dense, RMSprop
from fastnn import optimizers as optimizers_mod
from fastnn.schedules import CosineDecay, ExponentialDecay, LinearWarmup, StepDecay


# -- NumPy references (torch.optim.SGD / torch.optim.Adam documentation pseudo-code) ------------
class RefSGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.buf = {}

    def step(self, key, p, g):
        g = g + self.wd * p
        if self.mu != 0:
            if key not in self.buf:
                b = g.copy()
            else:
                b = self.mu * self.buf[key] + g
            self.buf[key] = b
            g = g + self.mu * b if self.nesterov else b
        return p - self.lr * g


class RefAdam:
    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, beta1, beta2, eps, weight_decay
        self.m, self.v, self.t = {}, {}, {}

    def step(self, key, p, g):
        g = g + self.wd * p
        t = self.t[key] = self.t.get(key, 0) + 1
        m = self.m[key] = self.b1 * self.m.get(key, 0.0) + (1 - self.b1) * g
        v = self.v[key] = self.b2 * self.v.get(key, 0.0) + (1 - self.b2) * g * g
        m_hat = m / (1 - self.b1 ** t)
        v_hat = v / (1 - self.b2 ** t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class RefAdamW(RefAdam):
    """torch.optim.AdamW: p <- p (1 - lr wd), then Adam without the L2 term (default wd 0.01)."""

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(lr, beta1, beta2, eps, weight_decay)

    def step(self, key, p, g):
        wd, self.wd = self.wd, 0.0
        try:
            return super().step(key, p * (1 - self.lr * wd), g)
        finally:
            self.wd = wd


class RefRMSprop:
    """torch.optim.RMSprop (its documentation's pseudo-code; alpha = rho)."""

    def __init__(self, lr, rho=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
        self.lr, self.rho, self.eps, self.mu = lr, rho, eps, momentum
        self.centered, self.wd = centered, weight_decay
        self.sq, self.ga, self.buf = {}, {}, {}

    def step(self, key, p, g):
        g = g + self.wd * p
        sq = self.sq[key] = self.rho * self.sq.get(key, 0.0) + (1 - self.rho) * g * g
        if self.centered:
            ga = self.ga[key] = self.rho * self.ga.get(key, 0.0) + (1 - self.rho) * g
            avg = np.sqrt(sq - ga * ga) + self.eps
        else:
            avg = np.sqrt(sq) + self.eps
        if self.mu > 0:
            b = self.buf[key] = self.mu * self.buf.get(key, 0.0) + g / avg
            return p - self.lr * b
        return p - self.lr * g / avg


class RefAdagrad:
    """torch.optim.Adagrad."""

    def __init__(self, lr, eps=1e-10, initial_accumulator_value=0.0, weight_decay=0.0,
                 lr_decay=0.0):
        self.lr, self.eps, self.init, self.wd, self.lr_decay = (
            lr, eps, initial_accumulator_value, weight_decay, lr_decay)
        self.sum, self.t = {}, {}

    def step(self, key, p, g):
        t = self.t[key] = self.t.get(key, 0) + 1
        clr = self.lr / (1 + (t - 1) * self.lr_decay)
        g = g + self.wd * p
        s = self.sum[key] = self.sum.get(key, self.init) + g * g
        return p - clr * g / (np.sqrt(s) + self.eps)


def clip_ref(grads, clipnorm=None, clipvalue=None):
    """torch.nn.utils.clip_grad_norm_ (global norm, coefficient min(1, c / (norm + 1e-6))) and
    clip_grad_value_, on a dict of float64 gradients."""
    if clipnorm is not None:
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        coef = min(1.0, clipnorm / (norm + 1e-6))
        return {k: g * coef for k, g in grads.items()}
    if clipvalue is not None:
        return {k: np.clip(g, -clipvalue, clipvalue) for k, g in grads.items()}
    return grads


def make_layers(dtype, rng):
    layers = [Dense(7, 5).build(dtype, rng), Activation("tanh").build(dtype),
              Dense(5, 3).build(dtype, rng)]
    for layer in layers:
        for k in layer.params:
            layer.params[k][...] = rng.standard_normal(layer.params[k].shape)
    return layers


def run_and_compare(opt, ref, dtype, steps=6, grad_scale=1.0, clipnorm=None, clipvalue=None,
                    schedule=None):
    """``steps`` updates of three layers by ``opt`` and by the NumPy reference ``ref`` (float64,
    from the same starting values and gradients), compared after each. With ``schedule``, the
    reference's rate at step t is ``schedule(t)``; the gradients are clipped globally by
    :func:`clip_ref` before the reference sees them."""
    rng = np.random.default_rng(0)
    layers = make_layers(dtype, rng)
    expected = {f"{i}.{k}": layer.params[k].astype(np.float64)
                for i, layer in enumerate(layers) for k in layer.params}
    for t in range(steps):
        grads = {}
        for i, layer in enumerate(layers):
            for k in layer.params:
                g = (rng.standard_normal(layer.params[k].shape) * grad_scale).astype(dtype)
                layer.grads[k][...] = g
                grads[f"{i}.{k}"] = g.astype(np.float64)
        raw = {k: layer.grads[n].copy() for k, (layer, n) in
               zip(grads, [(la, n) for la in layers for n in la.params])}
        if schedule is not None:
            ref.lr = schedule(t)
        for key, g in clip_ref(grads, clipnorm, clipvalue).items():
            expected[key] = ref.step(key, expected[key], g)
        opt.step(layers)
        for i, layer in enumerate(layers):
            for k in layer.params:
                got = layer.params[k]
                assert got.dtype == dtype
                # the gradients are read clipped, never written
                assert np.array_equal(layer.grads[k], raw[f"{i}.{k}"])
                if dtype == np.float64:
                    np.testing.assert_allclose(got, expected[f"{i}.{k}"], rtol=1e-12, atol=1e-13)
                else:
                    np.testing.assert_allclose(got, expected[f"{i}.{k}"], rtol=1e-5, atol=1e-5)
    assert opt.iterations == steps


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.5, nesterov=True),
    dict(weight_decay=0.1),
    dict(momentum=0.9, weight_decay=0.05),
    dict(momentum=0.8, nesterov=True, weight_decay=0.02),
], ids=["plain", "momentum", "nesterov", "wd", "momentum-wd", "nesterov-wd"])
def test_sgd_matches_torch_formulas(kwargs, dtype):
    run_and_compare(SGD(0.05, **kwargs), RefSGD(0.05, **kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs,grad_scale", [
    (dict(), 1.0),
    (dict(beta1=0.5, beta2=0.9), 1.0),
    (dict(eps=1e-3), 1e-3),  # eps comparable to sqrt(v_hat): catches eps in the wrong place
    (dict(weight_decay=0.1), 1.0),
], ids=["default", "betas", "eps", "wd"])
def test_adam_matches_torch_formulas(kwargs, grad_scale, dtype):
    run_and_compare(Adam(0.01, **kwargs), RefAdam(0.01, **kwargs), dtype, grad_scale=grad_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs,grad_scale", [
    (dict(), 1.0),
    (dict(weight_decay=0.3), 1.0),
    (dict(beta1=0.5, beta2=0.9, weight_decay=0.05), 1.0),
    (dict(eps=1e-3, weight_decay=0.0), 1e-3),
], ids=["default", "wd", "betas-wd", "eps-no-wd"])
def test_adamw_matches_torch_formulas(kwargs, grad_scale, dtype):
    run_and_compare(AdamW(0.01, **kwargs), RefAdamW(0.01, **kwargs), dtype, grad_scale=grad_scale)


def test_adamw_decays_every_parameter_by_lr_times_wd():
    """With a zero gradient the Adam step is 0 and AdamW only decays: p <- p (1 - lr wd), biases
    included; Adam's L2 decay instead goes through the moments (first step: lr * sign(p))."""
    rng = np.random.default_rng(4)
    layer = Dense(4, 3).build(np.float64, rng)
    layer.params["bias"][...] = rng.standard_normal(3)
    before = {k: layer.params[k].copy() for k in layer.params}
    AdamW(0.1, weight_decay=0.2).step([layer])
    for k in layer.params:
        np.testing.assert_allclose(layer.params[k], before[k] * (1 - 0.1 * 0.2), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs,grad_scale", [
    (dict(), 1.0),
    (dict(rho=0.9, eps=1e-3), 1e-3),  # eps comparable to sqrt(s): catches eps inside the root
    (dict(momentum=0.9), 1.0),
    (dict(centered=True), 1.0),
    (dict(centered=True, momentum=0.5, weight_decay=0.1), 1.0),
    (dict(weight_decay=0.2, rho=0.5), 1.0),
], ids=["default", "rho-eps", "momentum", "centered", "centered-momentum-wd", "wd"])
def test_rmsprop_matches_torch_formulas(kwargs, grad_scale, dtype):
    run_and_compare(RMSprop(0.01, **kwargs), RefRMSprop(0.01, **kwargs), dtype,
                    grad_scale=grad_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(lr_decay=0.3),
    dict(initial_accumulator_value=0.5, weight_decay=0.1),
    dict(eps=1e-2, lr_decay=0.1, weight_decay=0.01),
], ids=["default", "lr_decay", "init-wd", "eps-all"])
def test_adagrad_matches_torch_formulas(kwargs, dtype):
    run_and_compare(Adagrad(0.05, **kwargs), RefAdagrad(0.05, **kwargs), dtype)


def test_adagrad_accumulator_starts_at_initial_value():
    rng = np.random.default_rng(1)
    layer = Dense(3, 2).build(np.float32, rng)
    opt = Adagrad(initial_accumulator_value=0.25)
    g = rng.standard_normal((3, 2)).astype(np.float32)
    layer.grads["weight"][...] = g
    opt.step([layer])
    np.testing.assert_allclose(opt.state["0.weight"]["sum"], 0.25 + g.astype(np.float64) ** 2,
                               rtol=1e-6)
    np.testing.assert_allclose(opt.state["0.bias"]["sum"], 0.25)


# -- gradient clipping --------------------------------------------------------------------------
CLIP_CASES = [
    (lambda **c: SGD(0.05, momentum=0.9, **c), lambda: RefSGD(0.05, momentum=0.9)),
    (lambda **c: Adam(0.01, weight_decay=0.1, **c), lambda: RefAdam(0.01, weight_decay=0.1)),
    (lambda **c: AdamW(0.01, **c), lambda: RefAdamW(0.01, weight_decay=0.01)),
    (lambda **c: RMSprop(0.01, centered=True, momentum=0.5, **c),
     lambda: RefRMSprop(0.01, centered=True, momentum=0.5)),
    (lambda **c: Adagrad(0.05, weight_decay=0.1, **c), lambda: RefAdagrad(0.05, weight_decay=0.1)),
]
CLIP_IDS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CLIP_CASES, ids=CLIP_IDS)
@pytest.mark.parametrize("clip", [dict(clipnorm=1.5), dict(clipnorm=1e3), dict(clipvalue=0.3)],
                         ids=["norm-active", "norm-inactive", "value"])
def test_clipping_matches_torch_clip_utils(case, clip, dtype):
    """The gradients (norm ~7 over 56 entries of N(0, 1)) are clipped before weight decay and
    the moments: the reference applies clip_grad_norm_ / clip_grad_value_ to the raw gradients."""
    make, make_ref = case
    run_and_compare(make(**clip), make_ref(), dtype, **clip)


def test_clipnorm_scales_the_step_exactly():
    """SGD without momentum: the update is lr * g * clipnorm / (||g|| + 1e-6)."""
    rng = np.random.default_rng(3)
    layers = [Dense(5, 4).build(np.float64, rng), Dense(4, 2).build(np.float64, rng)]
    grads = []
    for layer in layers:
        for k in layer.params:
            layer.grads[k][...] = rng.standard_normal(layer.grads[k].shape) * 10
            grads.append(layer.grads[k].copy())
    before = [layer.params[k].copy() for layer in layers for k in layer.params]
    SGD(0.1, clipnorm=2.0).step(layers)
    norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
    for b, g, (layer, k) in zip(before, grads, [(la, k) for la in layers for k in la.params]):
        np.testing.assert_allclose(b - layer.params[k], 0.1 * g * 2.0 / (norm + 1e-6),
                                   rtol=1e-12)
    step = np.sqrt(sum(np.sum((b - layer.params[k]) ** 2) for b, (layer, k) in
                       zip(before, [(la, k) for la in layers for k in la.params])))
    assert step == pytest.approx(0.1 * 2.0, rel=1e-6)


def test_clipvalue_keeps_nan_gradients_nan():
    layer = Dense(2, 2).build(np.float64, np.random.default_rng(0))
    layer.grads["weight"][...] = [[np.nan, 5.0], [-5.0, 0.1]]
    before = layer.weight.copy()
    SGD(1.0, clipvalue=1.0).step([layer])
    assert np.isnan(layer.weight[0, 0])
    np.testing.assert_allclose((before - layer.weight).ravel()[1:], [1.0, -1.0, 0.1])


# -- schedules as learning_rate -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (lambda lr: SGD(lr, momentum=0.9), lambda: RefSGD(0.0, momentum=0.9)),
    (lambda lr: Adam(lr), lambda: RefAdam(0.0)),
    (lambda lr: AdamW(lr, weight_decay=0.5), lambda: RefAdamW(0.0, weight_decay=0.5)),
    (lambda lr: RMSprop(lr, momentum=0.3), lambda: RefRMSprop(0.0, momentum=0.3)),
    (lambda lr: Adagrad(lr, lr_decay=0.1), lambda: RefAdagrad(0.0, lr_decay=0.1)),
], ids=CLIP_IDS)
def test_scheduled_learning_rate_per_step(case, dtype):
    """Step t (0-based) uses schedule(t); AdamW's decay and Adagrad's lr_decay use that rate."""
    make, make_ref = case
    sched = LinearWarmup(CosineDecay(0.05, 4, alpha=0.1), 2, start_factor=0.5)
    run_and_compare(make(sched), make_ref(), dtype, steps=7, schedule=sched)


def test_adam_first_step_moves_each_weight_by_lr():
    """With bias correction the first Adam step is lr * sign(g) (up to eps)."""
    rng = np.random.default_rng(3)
    layer = Dense(4, 3).build(np.float64, rng)
    before = layer.weight.copy()
    layer.grads["weight"][...] = rng.standard_normal((4, 3))
    layer.grads["bias"][...] = 0.5
    Adam(0.01).step([layer])
    np.testing.assert_allclose(before - layer.weight, 0.01 * np.sign(layer.grads["weight"]),
                               rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: SGD(0.01, momentum=0.9, nesterov=True), lambda: Adam(1e-3),
    lambda: SGD(0.01, momentum=0.9, clipnorm=1.0), lambda: AdamW(1e-3, clipnorm=5.0),
    lambda: RMSprop(1e-3, centered=True, momentum=0.9, clipvalue=0.5),
    lambda: Adagrad(0.01, clipnorm=2.0, initial_accumulator_value=0.1),
    lambda: Adam(CosineDecay(1e-3, 3), clipnorm=3.0),
], ids=["sgd", "adam", "sgd-clipnorm", "adamw-clipnorm", "rmsprop-clipvalue",
        "adagrad-clipnorm", "adam-schedule-clipnorm"])
def test_optimizer_bit_identical_with_1_and_2_threads(make):
    """60,200 parameters: several blocks of the kernels and of the norm reduction."""
    rng = np.random.default_rng(5)
    W0 = rng.standard_normal((300, 200))
    grads = [rng.standard_normal((300, 200)) for _ in range(3)]
    out = []
    for nt in (1, 2):  # conftest resets the thread count after the test
        fastnn.set_num_threads(nt)
        layer = Dense(300, 200).build(np.float32, rng)
        layer.params["weight"][...] = W0
        opt = make()
        for g in grads:
            layer.grads["weight"][...] = g
            layer.grads["bias"][...] = g[0, :]
            opt.step([layer])
        out.append(layer.weight.copy())
    assert np.array_equal(out[0], out[1])
    assert not np.array_equal(out[0], W0.astype(np.float32))


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), -float("inf")])
def test_bad_learning_rate_raises(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        SGD(lr)
    with pytest.raises(ValueError, match="learning_rate"):
        Adam(lr)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_bad_momentum_raises(momentum):
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=momentum)


def test_other_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    for wd in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight_decay"):
            SGD(0.1, weight_decay=wd)
        with pytest.raises(ValueError, match="weight_decay"):
            Adam(0.1, weight_decay=wd)
    for beta in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="beta1"):
            Adam(beta1=beta)
        with pytest.raises(ValueError, match="beta2"):
            Adam(beta2=beta)
    for eps in (0.0, -1e-8, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            Adam(eps=eps)
    for bad in ("0.1", None, True, [0.1]):
        with pytest.raises(TypeError, match="learning_rate"):
            SGD(bad)


@pytest.mark.parametrize("make,match", [
    (lambda: RMSprop(rho=1.0), "rho"), (lambda: RMSprop(rho=-0.1), "rho"),
    (lambda: RMSprop(eps=0.0), "eps"), (lambda: RMSprop(momentum=1.0), "momentum"),
    (lambda: RMSprop(momentum=-0.5), "momentum"),
    (lambda: RMSprop(weight_decay=-1.0), "weight_decay"),
    (lambda: RMSprop(learning_rate=0.0), "learning_rate"),
    (lambda: AdamW(weight_decay=-0.01), "weight_decay"), (lambda: AdamW(beta2=1.0), "beta2"),
    (lambda: AdamW(eps=float("nan")), "eps"),
    (lambda: Adagrad(eps=0.0), "eps"), (lambda: Adagrad(lr_decay=-0.1), "lr_decay"),
    (lambda: Adagrad(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: Adagrad(weight_decay=float("inf")), "weight_decay"),
    (lambda: SGD(0.1, clipnorm=0.0), "clipnorm"), (lambda: Adam(clipnorm=-1.0), "clipnorm"),
    (lambda: Adam(clipnorm=float("nan")), "clipnorm"),
    (lambda: RMSprop(clipvalue=0.0), "clipvalue"),
    (lambda: Adagrad(clipvalue=float("inf")), "clipvalue"),
    (lambda: Adam(clipnorm=1.0, clipvalue=1.0), "at most one of clipnorm and clipvalue"),
])
def test_new_hyperparameters_are_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="centered"):
        RMSprop(centered="yes")
    with pytest.raises(TypeError, match="clipnorm"):
        SGD(0.1, clipnorm="1")
    with pytest.raises(TypeError, match="rho"):
        RMSprop(rho=None)
    with pytest.raises(TypeError, match="learning_rate"):
        AdamW(learning_rate=[1e-3])


@pytest.mark.parametrize("name,cls", [("sgd", SGD), ("Adam", Adam), ("adamw", AdamW),
                                      ("AdamW", AdamW), ("rmsprop", RMSprop),
                                      ("RMSprop", RMSprop), ("adagrad", Adagrad)])
def test_optimizers_get_and_compile_by_name(name, cls):
    assert type(optimizers_mod.get(name)) is cls
    model = fastnn.Sequential([Dense(3, 2)], seed=0).compile(optimizer=name, loss="mse")
    assert type(model.optimizer) is cls
    rng = np.random.default_rng(0)
    before = model.get_weights()
    model.train_on_batch(rng.standard_normal((4, 3)), rng.standard_normal((4, 2)))
    assert not np.array_equal(model.get_weights()[0]["weight"], before[0]["weight"])
    assert getattr(fastnn, cls.__name__) is cls


def test_optimizers_get_unknown_and_instance():
    opt = SGD(0.3)
    assert optimizers_mod.get(opt) is opt
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers_mod.get("lbfgs")


CONFIG_EXAMPLES = [
    SGD(0.2, momentum=0.7, nesterov=True, weight_decay=0.01),
    Adam(0.003, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
    SGD(StepDecay(0.1, 5, 0.5), momentum=0.9, clipnorm=1.0),
    Adam(LinearWarmup(CosineDecay(1e-3, 100, alpha=0.1), 10), clipvalue=0.5),
    AdamW(ExponentialDecay(1e-3, 10, 0.9), beta1=0.8, weight_decay=0.05, clipnorm=2.0),
    RMSprop(0.02, rho=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.01,
            clipvalue=1.0),
    Adagrad(LinearWarmup(0.1, 3), eps=1e-8, initial_accumulator_value=0.1, weight_decay=0.01,
            lr_decay=0.05, clipnorm=3.0),
]


@pytest.mark.parametrize("opt", CONFIG_EXAMPLES, ids=lambda o: type(o).__name__)
def test_get_config_round_trips_through_json(opt):
    config = json.loads(json.dumps(opt.get_config()))  # what a model file holds
    again = type(opt)(**config)
    assert again.get_config() == opt.get_config()
    assert again.clipnorm == opt.clipnorm and again.clipvalue == opt.clipvalue
    assert [again.learning_rate_at(t) for t in range(12)] == \
        [opt.learning_rate_at(t) for t in range(12)]


def test_current_learning_rate():
    opt = Adam(StepDecay(0.1, 2, 0.5))
    layer = Dense(2, 2).build(np.float64, np.random.default_rng(0))
    seen = []
    for _ in range(5):
        seen.append(opt.current_learning_rate)
        opt.step([layer])
    assert seen == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert Adam(0.02).current_learning_rate == 0.02


def _scheduled_model(dtype):
    model = fastnn.Sequential([Dense(6, 8, activation="tanh"), Dense(8, 3)], dtype=dtype, seed=3)
    opt = RMSprop(LinearWarmup(CosineDecay(0.01, 10, alpha=0.1), 3), momentum=0.5, centered=True,
                  clipnorm=0.5)
    return model.compile(opt, "softmax_cross_entropy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_of_a_scheduled_clipped_rmsprop_continues_identically(tmp_path, dtype):
    rng = np.random.default_rng(9)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    straight = _scheduled_model(dtype)
    straight.fit(X, y, epochs=4, batch_size=10, shuffle=False, verbose=0)  # 16 steps
    first = _scheduled_model(dtype)
    first.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    path = tmp_path / "m.npz"
    first.save(path)
    loaded = fastnn.load(path)
    opt = loaded.optimizer
    assert type(opt) is RMSprop and opt.iterations == 8 and opt.clipnorm == 0.5
    assert isinstance(opt.learning_rate, LinearWarmup)
    assert opt.current_learning_rate == first.optimizer.current_learning_rate
    loaded.fit(X, y, epochs=2, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), straight.get_weights()):
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    for key, slots in straight.optimizer.state.items():
        for s, arr in slots.items():
            assert np.array_equal(loaded.optimizer.state[key][s], arr), (key, s)


def test_bad_lr_schedule_in_a_model_file_is_a_clear_error(tmp_path):
    model = _scheduled_model("float32")
    config = model.optimizer.get_config()
    config["learning_rate"] = {"class": "NoSuchSchedule", "config": {}}
    with pytest.raises(ValueError, match="NoSuchSchedule"):
        RMSprop(**config)


# -- one flat buffer for the whole model (fastnn._flat) -----------------------------------------
def _mlp(dtype="float32", seed=0):
    model = fastnn.Sequential([Dense(7, 5, activation="tanh"), Dense(5, 3)], dtype=dtype,
                              seed=seed)
    model.compile(SGD(0.1, momentum=0.9), "softmax_cross_entropy")
    return model


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, 7)).astype(np.float32), rng.integers(0, 3, 16)


def test_model_parameters_share_one_buffer_and_keep_their_identity():
    model = _mlp()
    arrays = [layer.params[k] for layer in model.layers for k in layer.params]
    grads = [layer.grads[k] for layer in model.layers for k in layer.params]
    assert len({id(a.base) for a in arrays}) == 1 and arrays[0].base is not None
    assert len({id(g.base) for g in grads}) == 1 and grads[0].base is not arrays[0].base
    for a in arrays + grads:
        assert a.flags.c_contiguous and a.ctypes.data % 64 == 0
    X, y = _data()
    before = [a.copy() for a in arrays]
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    after = [layer.params[k] for layer in model.layers for k in layer.params]
    assert all(a is b for a, b in zip(arrays, after))  # same objects, updated in place
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    velocity = [model.optimizer.state[f"{i}.{k}"]["velocity"]
                for i, layer in enumerate(model.layers) for k in layer.params]
    assert len({id(v.base) for v in velocity}) == 1


def _train_reference(model, X, y, steps):
    """The same steps with per-parameter NumPy SGD (RefSGD) from a copy of the weights."""
    import copy

    ref_model = copy.deepcopy(model)
    ref = RefSGD(0.1, momentum=0.9)
    for _ in range(steps):
        ref_model.loss.forward(ref_model._forward(X, True), ref_model._prepare_y(y, len(X), (3,)),
                               prepared=True)
        ref_model.backward(ref_model.loss.backward())
        for i, layer in enumerate(ref_model.layers):
            for k in layer.params:
                layer.params[k][...] = ref.step(f"{i}.{k}", layer.params[k].astype(np.float64),
                                                layer.grads[k].astype(np.float64))
    return ref_model


def test_replaced_parameter_array_is_still_trained():
    """A user may assign a new array to layer.params[...]: the next step repacks the flat buffer
    from the current values instead of updating a stale copy."""
    model = _mlp()  # its parameters are packed at construction
    X, y = _data()
    new_w = np.random.default_rng(7).standard_normal((7, 5)).astype(np.float32)
    model.layers[0].params["weight"] = new_w.copy()
    ref_model = _train_reference(model, X, y, steps=3)
    for _ in range(3):
        model.train_on_batch(X, y)
    w = model.layers[0].params["weight"]
    assert not np.array_equal(w, new_w)
    for layer, ref_layer in zip(model.layers, ref_model.layers):
        for k in layer.params:
            np.testing.assert_allclose(layer.params[k], ref_layer.params[k], rtol=1e-5, atol=1e-6)


def test_deep_copy_trains_independently_and_identically():
    import copy

    model = _mlp()
    X, y = _data()
    model.train_on_batch(X, y)
    twin = copy.deepcopy(model)
    frozen = [layer.params[k].copy() for layer in model.layers for k in layer.params]
    for _ in range(3):
        twin.train_on_batch(X, y)
    assert all(np.array_equal(a, layer.params[k]) for a, (layer, k) in
               zip(frozen, [(layer, k) for layer in model.layers for k in layer.params]))
    for _ in range(3):
        model.train_on_batch(X, y)
    for layer, t_layer in zip(model.layers, twin.layers):
        for k in layer.params:
            assert np.array_equal(layer.params[k], t_layer.params[k])


def test_assigned_optimizer_state_is_used():
    """Loading assigns new state arrays (fastnn.io): the next step must start from them."""
    model = _mlp()
    X, y = _data()
    model.train_on_batch(X, y)
    saved = {k: {s: a.copy() for s, a in st.items()} for k, st in model.optimizer.state.items()}
    weights = model.get_weights()
    model.train_on_batch(X, y)
    expected = model.get_weights()
    model.set_weights(weights)
    for k, st in saved.items():
        for s, a in st.items():
            model.optimizer.state[k][s] = a.copy()  # new arrays, as load_model assigns
    model.train_on_batch(X, y)
    for got, want in zip(model.get_weights(), expected):
        for k in want:
            assert np.array_equal(got[k], want[k])
