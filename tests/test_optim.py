"""SGD against a straightforward reference (and torch.optim.SGD when torch is installed), resume
through state_dict, argument errors; learning-rate schedules."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from npse import backend
from npse.nn.module import Module, Parameter
from npse.optim import SGD, Constant, MultiStep, WarmupCosine, he_multistep, skip_bn_and_bias

SHAPES = {"conv.weight": (4, 3, 3, 3), "bn.weight": (4,), "bn.bias": (4,), "fc.weight": (2, 4)}
# With skip_bn_and_bias: the conv and linear weights decay; BatchNorm's scale and shift do not.
DECAYED_BY_FILTER = {"conv.weight", "fc.weight"}


class Tiny(Module):
    """Parameters only; registered in SHAPES order, with dotted names through a child."""

    def __init__(self, seed=0):
        super().__init__(dtype=np.float64)
        rng = np.random.default_rng(seed)
        self.conv = Module(dtype=np.float64)
        self.conv.weight = Parameter(rng.standard_normal(SHAPES["conv.weight"]))
        self.bn = Module(dtype=np.float64)
        self.bn.weight = Parameter(rng.standard_normal(4))
        self.bn.bias = Parameter(rng.standard_normal(4))
        self.fc = Module(dtype=np.float64)
        self.fc.weight = Parameter(rng.standard_normal((2, 4)))


def fake_grads(model, t):
    """Gradients that depend on the parameters (so trajectories diverge if any step is wrong)."""
    rng = np.random.default_rng(1000 + t)
    for _, p in model.named_parameters():
        p.grad[...] = np.sin(p.data) + 0.1 * rng.standard_normal(p.shape)


def reference_sgd(params, grads_fn, steps, lr, momentum, nesterov, wd, decays):
    """torch.optim.SGD's documented algorithm, written out with plain dicts of arrays."""
    params = {k: v.copy() for k, v in params.items()}
    bufs = {}
    for t in range(steps):
        grads = grads_fn(params, t)
        for k in params:
            g = grads[k] + (wd if decays[k] else 0.0) * params[k]
            if momentum:
                bufs[k] = g.copy() if t == 0 else momentum * bufs[k] + g
                g = g + momentum * bufs[k] if nesterov else bufs[k]
            params[k] = params[k] - lr(t) * g
    return params


def ref_grads(params, t):
    rng = np.random.default_rng(1000 + t)
    return {k: np.sin(v) + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}


def run(model, opt, steps, lr, start=0):
    for t in range(start, start + steps):
        opt.zero_grad()
        fake_grads(model, t)
        opt.lr = lr(t)
        opt.step()


CASES = [
    # momentum, nesterov, weight_decay, decay_filter
    (0.0, False, 0.0, None),
    (0.0, False, 5e-4, None),
    (0.9, False, 0.0, None),
    (0.9, False, 1e-2, None),
    (0.9, True, 0.0, None),
    (0.9, True, 1e-2, None),
    (0.9, True, 1e-2, skip_bn_and_bias),
    (0.5, False, 1e-1, skip_bn_and_bias),
]


@pytest.mark.parametrize("momentum,nesterov,wd,flt", CASES)
def test_sgd_matches_reference(momentum, nesterov, wd, flt):
    model = Tiny()
    start = {n: p.data.copy() for n, p in model.named_parameters()}
    lr = WarmupCosine(0.3, 12, 3)
    opt = SGD(model.named_parameters(), lr=0.0, momentum=momentum, nesterov=nesterov,
              weight_decay=wd, decay_filter=flt)
    run(model, opt, 12, lr)
    # Which parameters decay is written down here, not asked of the filter under test.
    decays = {n: flt is None or n in DECAYED_BY_FILTER for n in SHAPES}
    want = reference_sgd(start, ref_grads, 12, lr, momentum, nesterov, wd, decays)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.data, want[n], rtol=1e-12, atol=1e-14, err_msg=n)
    assert opt.step_count == 12


def test_decay_filter_exempts_1d_parameters():
    model = Tiny()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = SGD(model.named_parameters(), lr=0.5, weight_decay=0.1, decay_filter=skip_bn_and_bias)
    opt.zero_grad()
    opt.step()  # zero gradients: only weight decay moves anything
    for n, p in model.named_parameters():
        if p.data.ndim == 1:
            np.testing.assert_array_equal(p.data, before[n])
        else:
            np.testing.assert_allclose(p.data, before[n] * (1 - 0.5 * 0.1), rtol=1e-15)


def test_step_is_in_place_and_reuses_buffers():
    model = Tiny()
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    datas = [p.data for _, p in model.named_parameters()]
    run(model, opt, 2, Constant(0.1))
    bufs, work, work2 = list(opt._buffers), list(opt._work), list(opt._work2)
    run(model, opt, 3, Constant(0.1), start=2)
    assert all(a is p.data for a, (_, p) in zip(datas, model.named_parameters()))
    assert all(a is b for a, b in zip(bufs + work + work2, opt._buffers + opt._work + opt._work2))


def test_plain_parameter_list_gets_index_names():
    ps = [Parameter(np.ones(3)), Parameter(np.ones((2, 2)))]
    opt = SGD(ps, lr=1.0, momentum=0.9)
    for p in ps:
        p.grad[...] = 1.0
    opt.step()
    assert set(opt.state_dict()) == {"momentum_buffer.0", "momentum_buffer.1", "step"}
    np.testing.assert_array_equal(ps[0].data, np.zeros(3))


def test_runs_on_each_backend(backend_name):
    """Same trajectory on NumPy and CuPy; state_dict is host NumPy, load_state_dict moves back."""
    host = Tiny()
    dev = Tiny().to(backend_name)
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    opt_h, opt_d = SGD(host.named_parameters(), **kw), SGD(dev.named_parameters(), **kw)
    for t in range(3):
        fake_grads(host, t)
        for (_, ph), (_, pd) in zip(host.named_parameters(), dev.named_parameters()):
            pd.grad[...] = backend.to_device(ph.grad, backend_name)
        opt_h.step()
        opt_d.step()
    sd = opt_d.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    opt_d.load_state_dict(sd)
    assert all(backend.backend_of(b) == backend_name for b in opt_d._buffers)
    for (n, ph), (_, pd) in zip(host.named_parameters(), dev.named_parameters()):
        np.testing.assert_allclose(backend.to_host(pd.data), ph.data, rtol=1e-12, err_msg=n)


def test_zero_grad():
    model = Tiny()
    fake_grads(model, 0)
    SGD(model.named_parameters()).zero_grad()
    assert all(not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_resume_from_state_dict_equals_uninterrupted_run(momentum, nesterov):
    lr = WarmupCosine(0.2, 10, 2)
    kw = dict(momentum=momentum, nesterov=nesterov, weight_decay=1e-2,
              decay_filter=skip_bn_and_bias)
    full = Tiny()
    run(full, SGD(full.named_parameters(), **kw), 10, lr)

    first = Tiny()
    opt = SGD(first.named_parameters(), **kw)
    run(first, opt, 4, lr)
    saved_state = opt.state_dict()
    saved_params = {n: p.data.copy() for n, p in first.named_parameters()}
    run(first, opt, 2, lr, start=4)  # keep going: the saved state must not change with it

    second = Tiny(seed=99)  # different initial weights, overwritten from the "checkpoint"
    for n, p in second.named_parameters():
        p.data[...] = saved_params[n]
    opt2 = SGD(second.named_parameters(), **kw)
    opt2.load_state_dict(saved_state)
    assert opt2.step_count == 4
    run(second, opt2, 6, lr, start=4)
    for (n, a), (_, b) in zip(full.named_parameters(), second.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)


def test_state_dict_is_host_copies():
    model = Tiny()
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    assert set(opt.state_dict()) == {"step"}  # no buffers before the first step
    run(model, opt, 1, Constant(0.1))
    sd = opt.state_dict()
    assert set(sd) == {"step"} | {f"momentum_buffer.{n}" for n in SHAPES}
    assert sd["step"].shape == () and int(sd["step"]) == 1
    for n, shape in SHAPES.items():
        assert type(sd[f"momentum_buffer.{n}"]) is np.ndarray
        assert sd[f"momentum_buffer.{n}"].shape == shape
    before = sd["momentum_buffer.fc.weight"].copy()
    run(model, opt, 1, Constant(0.1), start=1)
    np.testing.assert_array_equal(sd["momentum_buffer.fc.weight"], before)


def test_load_state_dict_errors_name_the_key():
    model = Tiny()
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    run(model, opt, 1, Constant(0.1))
    good = opt.state_dict()

    bad = dict(good)
    del bad["momentum_buffer.bn.bias"]
    with pytest.raises(ValueError, match="missing keys.*momentum_buffer.bn.bias"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="unexpected keys.*momentum_buffer.nope"):
        opt.load_state_dict({**good, "momentum_buffer.nope": np.zeros(1)})
    with pytest.raises(ValueError, match=r"'momentum_buffer.fc.weight' has shape \(4, 2\)"):
        opt.load_state_dict({**good, "momentum_buffer.fc.weight": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="missing key 'step'"):
        opt.load_state_dict({k: v for k, v in good.items() if k != "step"})
    with pytest.raises(ValueError, match="'step'"):
        opt.load_state_dict({**good, "step": np.array(-1)})
    # A failed load changed nothing.
    assert opt.step_count == 1
    np.testing.assert_array_equal(opt._buffers[0], good["momentum_buffer.conv.weight"])


def test_argument_errors():
    ps = lambda: [Parameter(np.zeros(2))]  # noqa: E731
    with pytest.raises(ValueError, match="nesterov"):
        SGD(ps(), momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="lr must be >= 0, got -0.1"):
        SGD(ps(), lr=-0.1)
    with pytest.raises(ValueError, match="momentum must be >= 0, got -0.5"):
        SGD(ps(), momentum=-0.5)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -0.001"):
        SGD(ps(), weight_decay=-1e-3)
    with pytest.raises(ValueError, match="lr must be >= 0, got nan"):
        SGD(ps()).lr = float("nan")
    with pytest.raises(ValueError, match="empty"):
        SGD([])
    with pytest.raises(TypeError, match="position 0"):
        SGD([np.zeros(2)])
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        SGD([("a", p), ("b", p)])
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        SGD([("a", Parameter(np.zeros(2))), ("a", Parameter(np.zeros(2)))])


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-2),
                                                   (0.9, True, 1e-2)])
def test_matches_torch(momentum, nesterov, wd):
    torch = pytest.importorskip("torch")
    model = Tiny()
    tparams = {n: torch.tensor(p.data.copy(), requires_grad=True)
               for n, p in model.named_parameters()}
    topt = torch.optim.SGD(list(tparams.values()), lr=0.1, momentum=momentum, nesterov=nesterov,
                           weight_decay=wd)
    opt = SGD(model.named_parameters(), lr=0.1, momentum=momentum, nesterov=nesterov,
              weight_decay=wd)
    lr = MultiStep(0.1, [3, 6])
    for t in range(8):
        fake_grads(model, t)
        for n, p in model.named_parameters():
            tparams[n].grad = torch.tensor(p.grad.copy())
        opt.lr = lr(t)
        for group in topt.param_groups:
            group["lr"] = lr(t)
        opt.step()
        topt.step()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.data, tparams[n].detach().numpy(), rtol=1e-12, atol=1e-14)


# --- schedules ---------------------------------------------------------------------------------

def test_warmup_cosine_values():
    s = WarmupCosine(0.4, total_steps=110, warmup_steps=10)
    assert s(0) == pytest.approx(0.04)          # (0 + 1) / 10 of base: never a zero step
    assert s(4) == pytest.approx(0.2)
    assert s(9) == pytest.approx(0.4)           # warm-up ends at base_lr
    assert s(10) == pytest.approx(0.4)          # cosine starts at base_lr
    assert s(60) == pytest.approx(0.2)          # halfway through the cosine part
    last = 0.5 * 0.4 * (1 + math.cos(math.pi * 99 / 100))
    assert s(109) == pytest.approx(last) and 0 < s(109) < 1e-3
    values = [s(t) for t in range(10, 110)]
    assert all(b <= a for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="past the schedule"):
        s(110)


def test_warmup_cosine_without_warmup():
    s = WarmupCosine(0.1, total_steps=4)
    assert [s(t) for t in range(4)] == pytest.approx(
        [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))])
    all_warm = WarmupCosine(1.0, 4, 4)
    assert [all_warm(t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@given(total=st.integers(1, 500), frac=st.floats(0, 1), base=st.floats(1e-4, 10))
def test_warmup_cosine_properties(total, frac, base):
    warm = int(frac * total)
    s = WarmupCosine(base, total, warm)
    values = [s(t) for t in range(total)]
    assert all(0 < v <= base * (1 + 1e-12) for v in values)
    assert all(b <= a for a, b in zip(values[warm:], values[warm + 1:]))
    assert all(b > a for a, b in zip(values[:warm], values[1:warm]))


def test_multistep_values():
    s = MultiStep(0.1, [32000, 48000])
    assert s(0) == 0.1 and s(31999) == 0.1
    assert s(32000) == pytest.approx(0.01) and s(47999) == pytest.approx(0.01)
    assert s(48000) == pytest.approx(0.001) and s(63999) == pytest.approx(0.001)
    h = he_multistep(0.1, steps_per_epoch=400, epochs=160)  # 64k iterations in all
    assert h.milestones == [32000, 48000] and h(40000) == pytest.approx(0.01)
    assert MultiStep(1.0, [1], gamma=0.5)(1) == 0.5


def test_constant_and_describe():
    assert Constant(0.05)(0) == Constant(0.05)(10**6) == 0.05
    for s in (Constant(0.05), WarmupCosine(0.1, 10, 2), MultiStep(0.1, [5]), he_multistep(0.1, 10, 4)):
        text = s.describe()
        assert type(s).__name__ in text and ("0.1" in text or "0.05" in text)


def test_schedule_errors():
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0.1, 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(0.1, 10, 11)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(0.1, 10, -1)
    with pytest.raises(ValueError, match="base_lr"):
        WarmupCosine(-0.1, 10)
    with pytest.raises(ValueError, match="base_lr"):
        Constant(-1)
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiStep(0.1, [5, 3])
    with pytest.raises(ValueError, match="integers >= 0"):
        MultiStep(0.1, [-1])
    with pytest.raises(ValueError, match="gamma"):
        MultiStep(0.1, [5], gamma=0)
    with pytest.raises(ValueError, match="epochs"):
        he_multistep(0.1, 10, 0)
    with pytest.raises(ValueError, match="at least 4"):
        he_multistep(0.1, 1, 3)
    with pytest.raises(ValueError, match="iteration index"):
        Constant(0.1)(-1)
    with pytest.raises(ValueError, match="iteration index"):
        MultiStep(0.1, [5])(1.5)


# --- SGD's update written out, one formula per kind of parameter -------------------------------

@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("use_filter", [False, True])
def test_two_steps_written_out(nesterov, use_filter):
    """Two steps of torch.optim.SGD's rule, written out by hand for each parameter:

        g_t = grad_t + wd * p_{t-1}          (wd = 0 for BN/bias when the filter is on)
        b_1 = g_1,   b_t = m * b_{t-1} + g_t
        d_t = g_t + m * b_t  (Nesterov)   or   b_t
        p_t = p_{t-1} - lr_t * d_t
    """
    lr1, lr2, m, wd = 0.1, 0.05, 0.9, 0.01
    model = Tiny()
    p0 = {n: p.data.copy() for n, p in model.named_parameters()}
    grads = [{n: np.full(SHAPES[n], 0.5) for n in SHAPES},
             {n: np.linspace(-1, 1, int(np.prod(SHAPES[n]))).reshape(SHAPES[n]) for n in SHAPES}]
    opt = SGD(model.named_parameters(), lr=lr1, momentum=m, nesterov=nesterov, weight_decay=wd,
              decay_filter=skip_bn_and_bias if use_filter else None)
    for step, lr in enumerate((lr1, lr2)):
        for n, p in model.named_parameters():
            p.grad[...] = grads[step][n]
        opt.lr = lr
        opt.step()
    for n, p in model.named_parameters():
        decay = wd if (not use_filter or n in ("conv.weight", "fc.weight")) else 0.0
        g1 = grads[0][n] + decay * p0[n]
        b1 = g1
        p1 = p0[n] - lr1 * ((g1 + m * b1) if nesterov else b1)
        g2 = grads[1][n] + decay * p1
        b2 = m * b1 + g2
        p2 = p1 - lr2 * ((g2 + m * b2) if nesterov else b2)
        np.testing.assert_allclose(p.data, p2, rtol=1e-13, atol=1e-15, err_msg=n)


def test_decay_filter_on_a_real_model():
    """A second guard for skip_bn_and_bias, on a SE-ResNet's own parameter names: every conv and
    linear weight decays; every BatchNorm scale/shift and every bias does not."""
    from npse.models import build_model
    model = build_model("se_resnet8", widths=(4, 8, 8), se_reduction=2)
    verdicts = {n: skip_bn_and_bias(n, p) for n, p in model.named_parameters()}
    exempt = {n for n, decays in verdicts.items() if not decays}
    assert exempt and exempt == {n for n, p in model.named_parameters()
                                 if n.endswith(".bias") or p.data.ndim == 1}
    assert all(n.endswith(".weight") and p.data.ndim >= 2
               for n, p in model.named_parameters() if verdicts[n])
    # And through SGD: with zero gradients, only the decayed parameters move.
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = SGD(model.named_parameters(), lr=1.0, weight_decay=0.5, decay_filter=skip_bn_and_bias)
    opt.zero_grad()
    opt.step()
    for n, p in model.named_parameters():
        moved = not np.array_equal(p.data, before[n])
        assert moved == (n not in exempt) or not before[n].any(), n
