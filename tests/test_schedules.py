"""Learning-rate schedules (fastnn.schedules) against their published formulas, their use as an
optimizer's learning_rate (per step), serialisation, and the ReduceLROnPlateau callback."""
import json
import math

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Dense, RMSprop
from fastnn.callbacks import LearningRateScheduler, ReduceLROnPlateau
from fastnn.schedules import (SCHEDULES, Constant, CosineDecay, ExponentialDecay, LinearWarmup,
                              Schedule, StepDecay, deserialize, serialize)

STEPS = range(0, 40)


# -- formulas -------------------------------------------------------------------------------------
def keras_cosine(lr0, decay_steps, alpha, t):
    """keras.optimizers.schedules.CosineDecay (no warm-up)."""
    t = min(t, decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * t / decay_steps))
    return lr0 * ((1 - alpha) * cosine + alpha)


def test_cosine_decay_matches_keras_formula():
    s = CosineDecay(0.1, 17, alpha=0.05)
    for t in STEPS:
        assert s(t) == pytest.approx(keras_cosine(0.1, 17, 0.05, t), rel=1e-15)
    assert s(0) == 0.1 and s(17) == pytest.approx(0.005) and s(1000) == s(17)


def test_step_decay_matches_torch_steplr():
    """torch.optim.lr_scheduler.StepLR: lr = lr0 * gamma ** (epoch // step_size)."""
    s = StepDecay(0.2, 7, gamma=0.5)
    for t in STEPS:
        assert s(t) == pytest.approx(0.2 * 0.5 ** (t // 7), rel=1e-15)
    assert s(6) == 0.2 and s(7) == 0.1 and s(14) == 0.05
    assert StepDecay(1.0, 3)(3) == pytest.approx(0.1)  # default gamma 0.1


def test_exponential_decay_matches_keras_formula():
    """keras.optimizers.schedules.ExponentialDecay(staircase=False)."""
    s = ExponentialDecay(0.3, 10, 0.96)
    for t in STEPS:
        assert s(t) == pytest.approx(0.3 * 0.96 ** (t / 10), rel=1e-14)
    assert s(10) == pytest.approx(0.3 * 0.96) and s(5) == pytest.approx(0.3 * math.sqrt(0.96))


def test_constant():
    assert all(Constant(0.3)(t) == 0.3 for t in STEPS)


@pytest.mark.parametrize("start_factor", [0.0, 0.25, 1.0])
def test_linear_warmup_then_schedule(start_factor):
    inner = CosineDecay(0.1, 20, alpha=0.1)
    s = LinearWarmup(inner, 5, start_factor=start_factor)
    for t in STEPS:
        if t < 5:
            want = 0.1 * (start_factor + (1 - start_factor) * t / 5)
        else:
            want = keras_cosine(0.1, 20, 0.1, t - 5)
        assert s(t) == pytest.approx(want, rel=1e-14, abs=1e-300)
    assert s(0) == pytest.approx(0.1 * start_factor)
    # continuous at the end of the warm-up: the last warm-up step is below it, the next is s(0)
    assert s(5) == inner(0)
    if start_factor < 1:
        assert s(0) < s(1) < s(4) < s(5)


def test_linear_warmup_of_a_float_and_of_a_nested_warmup():
    s = LinearWarmup(0.4, 4)
    assert [s(t) for t in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    nested = LinearWarmup(LinearWarmup(StepDecay(1.0, 2, 0.5), 2, 0.5), 2)
    # outer: 0, 0.5 * inner(0) = 0.25; then inner from its step 0: 0.5, 0.75, then StepDecay
    assert [nested(t) for t in range(8)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0,
                                                           0.5, 0.5])


# -- serialisation and registry ----------------------------------------------------------------
SCHEDULE_EXAMPLES = [
    Constant(0.02), CosineDecay(0.1, 30, alpha=0.2), StepDecay(0.5, 3, gamma=0.3),
    ExponentialDecay(0.1, 7, 0.5), LinearWarmup(0.01, 3, start_factor=0.1),
    LinearWarmup(CosineDecay(1e-3, 100), 10),
    LinearWarmup(LinearWarmup(ExponentialDecay(1.0, 2, 0.9), 3), 2, 0.5),
]


@pytest.mark.parametrize("s", SCHEDULE_EXAMPLES, ids=lambda s: type(s).__name__)
def test_serialize_round_trips_through_json(s):
    entry = json.loads(json.dumps(serialize(s)))
    again = deserialize(entry)
    assert type(again) is type(s) and again.get_config() == s.get_config()
    assert [again(t) for t in STEPS] == [s(t) for t in STEPS]
    assert type(s).__name__ in repr(s)


def test_registry_names():
    for name in ("Constant", "CosineDecay", "StepDecay", "ExponentialDecay", "LinearWarmup"):
        assert issubclass(SCHEDULES[name], Schedule)
    assert fastnn.schedules.StepDecay is SCHEDULES["StepDecay"]


def test_deserialize_errors():
    with pytest.raises(ValueError, match="unknown schedule 'NoSuch'"):
        deserialize({"class": "NoSuch", "config": {}})
    with pytest.raises(ValueError, match="class"):
        deserialize({"config": {}})
    with pytest.raises(ValueError, match="invalid config"):
        deserialize({"class": "StepDecay", "config": {"initial_learning_rate": 0.1}})
    with pytest.raises(ValueError, match="decay_steps"):
        deserialize({"class": "CosineDecay", "config": {"initial_learning_rate": 0.1,
                                                        "decay_steps": 0}})
    with pytest.raises(TypeError, match="Schedule"):
        serialize(0.1)


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: CosineDecay(0.0, 10), "initial_learning_rate"),
    (lambda: CosineDecay(0.1, 0), "decay_steps"),
    (lambda: CosineDecay(0.1, 10, alpha=1.5), "alpha"),
    (lambda: StepDecay(-1.0, 10), "initial_learning_rate"),
    (lambda: StepDecay(0.1, 0), "step_size"),
    (lambda: StepDecay(0.1, 3, gamma=0.0), "gamma"),
    (lambda: StepDecay(0.1, 3, gamma=float("nan")), "gamma"),
    (lambda: ExponentialDecay(0.1, 0, 0.9), "decay_steps"),
    (lambda: ExponentialDecay(0.1, 10, 0.0), "decay_rate"),
    (lambda: ExponentialDecay(float("inf"), 10, 0.5), "initial_learning_rate"),
    (lambda: LinearWarmup(0.1, 0), "warmup_steps"),
    (lambda: LinearWarmup(0.1, 3, start_factor=-0.1), "start_factor"),
    (lambda: LinearWarmup(0.0, 3), "schedule"),
    (lambda: Constant(0.0), "learning_rate"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    (lambda: CosineDecay(0.1, 10.0), "decay_steps"),
    (lambda: StepDecay(0.1, "3"), "step_size"),
    (lambda: LinearWarmup("cosine", 3), "schedule"),
    (lambda: ExponentialDecay(0.1, 10, None), "decay_rate"),
])
def test_bad_argument_types_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize("s", SCHEDULE_EXAMPLES[:5], ids=lambda s: type(s).__name__)
def test_bad_step_raises(s):
    with pytest.raises(ValueError, match="step"):
        s(-1)
    with pytest.raises(TypeError, match="step"):
        s(1.5)


# -- as an optimizer's learning_rate: counted in steps ------------------------------------------
def _layer(seed=0):
    rng = np.random.default_rng(seed)
    layer = Dense(3, 2).build(np.float64, rng)
    return layer, rng


def test_optimizer_uses_schedule_of_its_step():
    """SGD without momentum moves p by exactly lr_t * g: the rates used are schedule(0), (1), ..."""
    sched = LinearWarmup(StepDecay(0.4, 2, 0.5), 3, start_factor=0.25)
    opt = SGD(sched)
    layer, rng = _layer()
    used = []
    for t in range(8):
        assert opt.current_learning_rate == sched(t) and opt.iterations == t
        g = rng.standard_normal((3, 2))
        layer.grads["weight"][...] = g
        before = layer.weight.copy()
        opt.step([layer])
        used.append(np.mean((before - layer.weight) / g))
    np.testing.assert_allclose(used, [sched(t) for t in range(8)], rtol=1e-10)
    assert opt.learning_rate is sched


def test_rate_zero_from_a_schedule_is_allowed_and_moves_nothing():
    opt = SGD(LinearWarmup(0.1, 2))  # step 0 has rate 0
    layer, rng = _layer()
    layer.grads["weight"][...] = rng.standard_normal((3, 2))
    before = layer.weight.copy()
    opt.step([layer])
    assert np.array_equal(layer.weight, before)
    opt.step([layer])
    assert not np.array_equal(layer.weight, before)


class _Bad(Schedule):
    def __init__(self, value):
        self.value = value

    def __call__(self, step):
        return self.value

    def get_config(self):
        return {"value": self.value}


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_schedule_returning_a_bad_rate_raises_at_the_step(value):
    opt = Adam(_Bad(value))
    layer, _ = _layer()
    with pytest.raises(ValueError, match="returned"):
        opt.step([layer])


def test_learning_rate_assignment_is_checked():
    opt = SGD(0.1)
    opt.learning_rate = CosineDecay(0.1, 5)
    assert isinstance(opt.learning_rate, CosineDecay)
    opt.learning_rate = 0.05
    assert opt.learning_rate == 0.05 and opt.current_learning_rate == 0.05
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate = -1.0
    with pytest.raises(TypeError, match="learning_rate"):
        opt.learning_rate = "fast"


# -- callbacks ----------------------------------------------------------------------------------
def _model(optimizer):
    model = fastnn.Sequential([Dense(4, 3)], dtype="float64", seed=0)
    return model.compile(optimizer, "softmax_cross_entropy")


def _data():
    rng = np.random.default_rng(2)
    return rng.standard_normal((16, 4)), rng.integers(0, 3, 16)


def test_learning_rate_scheduler_refuses_a_scheduled_optimizer():
    model = _model(SGD(CosineDecay(0.1, 10)))
    X, y = _data()
    with pytest.raises(TypeError, match="schedule"):
        model.fit(X, y, epochs=1, batch_size=16, verbose=0,
                  callbacks=[LearningRateScheduler(CosineDecay(0.1, 3))])


def keras_plateau(values, lr, factor, patience, min_delta, cooldown, min_lr, mode_max):
    """keras.callbacks.ReduceLROnPlateau.on_epoch_end, transcribed: the rate after each epoch."""
    best = -np.inf if mode_max else np.inf
    wait = cooldown_counter = 0
    out = []
    for current in values:
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if (current > best + min_delta) if mode_max else (current < best - min_delta):
            best, wait = current, 0
        elif not cooldown_counter > 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr)
                cooldown_counter, wait = cooldown, 0
        out.append(lr)
    return out


@pytest.mark.parametrize("kwargs,monitor", [
    (dict(factor=0.5, patience=2), "val_loss"),
    (dict(factor=0.1, patience=1, cooldown=2), "val_loss"),
    (dict(factor=0.5, patience=0, min_lr=0.02), "val_loss"),
    (dict(factor=0.5, patience=2, min_delta=0.05), "val_loss"),
    (dict(factor=0.2, patience=1), "val_accuracy"),   # auto: maximised
    (dict(factor=0.2, patience=1, mode="min"), "val_accuracy"),
])
def test_reduce_lr_on_plateau_follows_keras(kwargs, monitor):
    rng = np.random.default_rng(len(kwargs))
    # plateaus and small improvements: a random walk rounded to 0.05 steps
    values = list(np.round(1.0 + np.cumsum(rng.choice([-0.1, -0.03, 0.0, 0.0, 0.04], 30)), 2))
    model = _model(SGD(0.1))
    cb = ReduceLROnPlateau(monitor=monitor, **kwargs)
    cb.model = model
    cb.params = {"metrics": ["loss", monitor]}
    cb.on_train_begin()
    got = []
    for e, v in enumerate(values):
        cb.on_epoch_end(e, {"loss": 1.0, monitor: v})
        got.append(model.optimizer.learning_rate)
    full = dict(factor=0.1, patience=10, min_delta=1e-4, cooldown=0, min_lr=0.0)
    full.update({k: v for k, v in kwargs.items() if k != "mode"})
    mode_max = kwargs.get("mode", "auto") == "max" or (kwargs.get("mode", "auto") == "auto"
                                                       and "acc" in monitor)
    want = keras_plateau(values, 0.1, mode_max=mode_max, **full)
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert len(set(want)) > 1, "the scenario must reduce the rate at least once"


def test_reduce_lr_on_plateau_in_fit():
    """A model that cannot improve (learning rate ~0): the loss is flat (changes < min_delta), so
    with patience 1 every epoch after the first cuts the rate (the wait restarts at 0 after a
    cut, no cooldown): three halvings in four epochs."""
    model = _model(SGD(1e-12))
    X, y = _data()
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e-3)
    history = model.fit(X, y, epochs=4, batch_size=16, shuffle=False, verbose=0,
                        callbacks=[cb])
    assert model.optimizer.learning_rate == pytest.approx(1e-12 * 0.125, rel=1e-12, abs=0)
    assert cb.best == history.history["loss"][0] and cb.wait == 0


def test_reduce_lr_on_plateau_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="val_loss"):
        _model(SGD(0.1)).fit(X, y, epochs=1, batch_size=16, verbose=0,
                             callbacks=[ReduceLROnPlateau()])
    with pytest.raises(TypeError, match="schedule"):
        _model(RMSprop(CosineDecay(0.01, 5))).fit(
            X, y, epochs=1, batch_size=16, verbose=0, callbacks=[ReduceLROnPlateau(monitor="loss")])
    for bad in (dict(factor=1.0), dict(factor=0.0), dict(factor=float("nan")),
                dict(patience=-1), dict(cooldown=-1), dict(min_lr=-1e-3), dict(min_delta=-1.0),
                dict(mode="up")):
        with pytest.raises(ValueError):
            ReduceLROnPlateau(**bad)
