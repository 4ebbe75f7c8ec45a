"""SGD and Adam against a NumPy re-implementation of the torch.optim formulas, several steps."""
import numpy as np
import pytest

import fastnn
from fastnn import SGD, Activation, Adam, Dense
from fastnn import optimizers as optimizers_mod


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


def make_layers(dtype, rng):
    layers = [Dense(7, 5).build(dtype, rng), Activation("tanh").build(dtype),
              Dense(5, 3).build(dtype, rng)]
    for layer in layers:
        for k in layer.params:
            layer.params[k][...] = rng.standard_normal(layer.params[k].shape)
    return layers


def run_and_compare(opt, ref, dtype, steps=6, grad_scale=1.0):
    rng = np.random.default_rng(0)
    layers = make_layers(dtype, rng)
    expected = {f"{i}.{k}": layer.params[k].astype(np.float64)
                for i, layer in enumerate(layers) for k in layer.params}
    for _ in range(steps):
        for i, layer in enumerate(layers):
            for k in layer.params:
                g = (rng.standard_normal(layer.params[k].shape) * grad_scale).astype(dtype)
                layer.grads[k][...] = g
                key = f"{i}.{k}"
                expected[key] = ref.step(key, expected[key], g.astype(np.float64))
        opt.step(layers)
        for i, layer in enumerate(layers):
            for k in layer.params:
                got = layer.params[k]
                assert got.dtype == dtype
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


@pytest.mark.parametrize("make", [lambda: SGD(0.01, momentum=0.9, nesterov=True),
                                  lambda: Adam(1e-3)], ids=["sgd", "adam"])
def test_optimizer_bit_identical_with_1_and_2_threads(make):
    rng = np.random.default_rng(5)
    W0 = rng.standard_normal((300, 200))
    grads = [rng.standard_normal((300, 200)) for _ in range(3)]
    out = []
    for nt in (1, 2):
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


def test_optimizers_get():
    assert isinstance(optimizers_mod.get("sgd"), SGD)
    assert isinstance(optimizers_mod.get("Adam"), Adam)
    opt = SGD(0.3)
    assert optimizers_mod.get(opt) is opt
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers_mod.get("lbfgs")


def test_get_config_round_trips():
    for opt in (SGD(0.2, momentum=0.7, nesterov=True, weight_decay=0.01),
                Adam(0.003, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)):
        again = type(opt)(**opt.get_config())
        assert again.get_config() == opt.get_config()


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
