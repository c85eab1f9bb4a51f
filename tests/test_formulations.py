"""One agreement suite: every formulation registered in npse.fast against the reference it replaces.

For each registered formulation (npse.fast.registry.FORMULATIONS), on shapes drawn by hypothesis
(tests/strategies.py): two copies of the layer with the same weights, one running the reference
functions of npse.nn and one the formulation; the output, the input gradient, every parameter
gradient and every buffer (BatchNorm's running statistics) must agree to 1e-12 in float64, with
the input and dy each stored contiguous and channels last, forward passes under no_grad too, and
twice in a row (the second pass reuses the workspace buffers). A new formulation is tested by
being registered; a new layer with formulations needs only its case below.

Then the whole models under every policy, checkpoints written before the policies existed, the
policy object itself, the helpers the formulations are built from, and the import graph.
"""
import ast
import importlib
import inspect
import pkgutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from conftest import UseBackend, to_backend
from npse import backend, fast, models, nn
from npse.checkpoint import CheckpointReader
from npse.models.loading import model_from_checkpoint
from npse.fast import FAST, FORMULATIONS, REFERENCE, UPDATES, ExecutionPolicy, SharedWorkspaces
from npse.fast import patches
from npse.fast.cost import conv_products
from npse.fast.reductions import channel_dot, channel_sum, spatial_dot, spatial_mean
from npse.gradcheck import relative_error
from npse.optim import SGD
from npse.fast.layout import is_channels_last, nhwc, to_channels_last
from strategies import batch, normal, seeds, window_cases

TOL = 1e-12
ROOT = Path(__file__).resolve().parents[1]


# --- one case strategy per layer class: (build(rng) -> layer, input shape, input shift) ------------
@st.composite
def conv_case(draw):
    case = draw(window_cases())
    out_channels, bias = draw(st.integers(1, 4)), draw(st.booleans())
    c = case.c + 1                   # at least two channels: with one, both memory formats coincide

    def build(rng):
        return nn.Conv2d(c, out_channels, case.kernel, case.stride, case.padding, bias=bias,
                         dtype="float64", rng=rng)
    return build, (case.n, c, case.h, case.w), 0.0, case.seed


@st.composite
def batchnorm_case(draw):
    n, c, h, w = draw(batch), draw(st.integers(2, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    training = draw(st.booleans())
    # Training needs two values per channel, and with exactly two dx is a rounding residue
    # (xhat = +-1 whatever x is; see test_batchnorm2d.py) whose digits depend on the order of
    # the sums: comparing two of them to 1e-12 would test rounding, not the formulas.
    assume(not training or n * h * w >= 3)

    def build(rng):
        bn = nn.BatchNorm2d(c, dtype="float64")
        bn.weight.data[...] = rng.uniform(0.5, 2.0, c)
        bn.bias.data[...] = rng.standard_normal(c)
        bn.running_mean[...] = rng.standard_normal(c)
        bn.running_var[...] = rng.uniform(0.5, 2.0, c)
        return bn.train(training)
    return build, (n, c, h, w), 1.0, draw(seeds)


@st.composite
def pool_case(draw):
    shape = (draw(batch), draw(st.integers(2, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return (lambda rng: nn.GlobalAvgPool2d(dtype="float64")), shape, 0.0, draw(seeds)


@st.composite
def se_case(draw):
    shape = (draw(batch), draw(st.integers(2, 8)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    squeeze = draw(st.sampled_from(sorted(nn.SQUEEZES)))
    excitation = draw(st.sampled_from(sorted(nn.GATES)))
    return (lambda rng: nn.SEBlock(shape[1], 2, squeeze, excitation, dtype="float64", rng=rng)), \
        shape, 0.5, draw(seeds)


@st.composite
def relu_case(draw):
    shape = (draw(batch), draw(st.integers(2, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return (lambda rng: nn.ReLU(dtype="float64")), shape, 0.0, draw(seeds)


CASES = {nn.Conv2d: conv_case(), nn.BatchNorm2d: batchnorm_case(), nn.GlobalAvgPool2d: pool_case(),
         nn.SEBlock: se_case(), nn.ReLU: relu_case()}
#: The thread counts every formulation is checked at (npse/fast/threads.py): one, and the work
#: cut into slices of the batch (and of BatchNorm's pixel rows) run at the same time.
THREADS = [1, 2, 4]


@pytest.fixture
def threads(request):
    """Run the test with ``request.param`` threads, and one thread again afterwards."""
    fast.threads.set_num_threads(request.param)
    yield request.param
    fast.threads.set_num_threads(1)


def _moves_to(layer, backend_name):
    if backend_name != "numpy":
        layer.to(backend_name)
    return layer


def _pass(layer, x, dy):
    """Everything one training pass of ``layer`` produces, then its output under no_grad."""
    layer.zero_grad()
    y = layer(x)
    dx = layer.backward(dy)
    grads = [p.grad.copy() for p in layer.parameters()]
    buffers = [b.copy() for _, b in layer.named_buffers()]
    with nn.no_grad():
        lean = layer(x)
    return [y, dx] + grads + buffers + [lean]


def _assert_agree(got, want, what):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, (what, i)
        assert relative_error(a, b) <= TOL, (what, i, relative_error(a, b))


def test_every_layer_with_formulations_has_a_case_and_one_chosen_formulation():
    for layer in {f.layer for f in FORMULATIONS}:
        assert layer in CASES, f"{layer.__name__} has formulations but no case in this suite"
        assert sum(f.chosen for f in FORMULATIONS if f.layer is layer) == 1, layer.__name__


@pytest.mark.parametrize("threads", THREADS, indirect=True, ids=lambda t: f"{t} threads")
@pytest.mark.parametrize("formulation", FORMULATIONS, ids=lambda f: f"{f.layer.__name__}: {f.name}")
def test_formulation_agrees_with_the_reference(backend_name, formulation, threads):
    if backend_name not in formulation.backends:
        pytest.skip(f"{formulation.name} runs on {formulation.backends} only")

    @given(case=CASES[formulation.layer])
    def check(case):
        build, shape, shift, seed = case
        rng = np.random.default_rng(seed)
        x0 = normal(rng, shape) + shift
        with UseBackend(backend_name) as xp:
            for x_stored in ("contiguous", "channels last"):
                x = to_backend(x0, backend_name)
                x = to_channels_last(x) if x_stored == "channels last" else x
                with nn.no_grad():
                    y_shape = _moves_to(build(np.random.default_rng(seed)), backend_name)(x).shape
                for dy_stored in ("contiguous", "channels last"):
                    dy = xp.asarray(normal(np.random.default_rng(seed + 1), y_shape))
                    dy = to_channels_last(dy) if dy_stored == "channels last" and dy.ndim == 4 else dy
                    want = _pass(_moves_to(build(np.random.default_rng(seed)), backend_name), x, dy)
                    faster = _moves_to(build(np.random.default_rng(seed)), backend_name)
                    faster.formulation = formulation.make(FAST, SharedWorkspaces())
                    for repeat in range(2):        # the second time, kept buffers are reused
                        if repeat:                 # the same start for the running statistics
                            faster.load_state_dict(build(np.random.default_rng(seed)).state_dict())
                        _assert_agree(_pass(faster, x, dy), want, (x_stored, dy_stored, repeat))
    check()


# --- the optimizer's update --------------------------------------------------------------------------
# The optimizer each registered update formulation names, and how to build it plainly.
OPTIMIZERS = {"SGD": lambda params, nesterov: SGD(params, lr=0.1, momentum=0.9, nesterov=nesterov,
                                                  weight_decay=5e-4, fused=False,
                                                  decay_filter=lambda name, p: p.data.ndim > 1)}


def test_every_update_formulation_names_a_known_optimizer_and_the_fused_sgd_is_registered():
    """The fused CuPy SGD kernel is CuPy-only: here it is checked to be registered (and what
    SGD(fused=True) runs); the agreement below runs where a GPU is."""
    assert {u.optimizer for u in UPDATES} <= set(OPTIMIZERS)
    fused = [u for u in UPDATES if u.optimizer == "SGD" and u.backends == ("cupy",)]
    assert len(fused) == 1 and fused[0].module == "npse.fast.sgd"
    p = nn.Parameter(np.zeros(3))
    assert isinstance(SGD([p], momentum=0.9).formulation, fused[0].make)
    assert SGD([p], momentum=0.9, fused=False).formulation is None
    assert not fused[0].make().applies(np, 0.9)


@pytest.mark.parametrize("update", UPDATES, ids=lambda u: f"{u.optimizer}: {u.name}")
@pytest.mark.parametrize("nesterov", [True, False])
def test_update_formulation_agrees_with_the_plain_update(backend_name, update, nesterov):
    """Three steps (the first-step rule, then momentum) of the plain update and of the
    formulation, in float64, on parameters with and without weight decay: the parameters and
    the optimizer's state (momentum buffers) must agree to 1e-12."""
    if backend_name not in update.backends:
        pytest.skip(f"{update.name} runs on {update.backends} only")
    rng = np.random.default_rng(2)
    shapes = [(4, 3, 3, 3), (4,), (10, 6)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    runs = []
    with UseBackend(backend_name):
        for formulation in (None, update.make()):
            params = [nn.Parameter(to_backend(a.copy(), backend_name)) for a in start]
            opt = OPTIMIZERS[update.optimizer](list(enumerate(params)), nesterov)
            opt.formulation = formulation
            assert formulation is None or formulation.applies(backend.module(backend_name), opt.momentum)
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad[...] = to_backend(g, backend_name)
                opt.step()
            state = opt.state_dict()
            runs.append([backend.to_host(p.data) for p in params]
                        + [np.asarray(state[k], dtype=np.float64) for k in sorted(state)])
    _assert_agree(runs[1], runs[0], update.name)


# --- whole models under every policy ---------------------------------------------------------------
POLICIES = [FAST, REFERENCE, FAST.replace(name="contiguous", memory_format="contiguous"),
            FAST.replace(name="col2im, no workspaces", input_gradient="col2im", workspaces=False),
            FAST.replace(name="everything by kernel rows or per image", kernel_rows_max_channels=10**6,
                         per_image_min_pixels=0)]


@pytest.mark.parametrize("threads", THREADS, indirect=True, ids=lambda t: f"{t} threads")
@pytest.mark.parametrize("se,shortcut,block,depth", [
    ("standard", "A", "basic", 8), ("pre", "B", "basic", 8), ("nosqueeze", "A", "basic", 8),
    ("3x3", "A", "bottleneck", 11), (None, "B", "bottleneck", 11)])
def test_models_give_the_same_numbers_under_every_policy(se, shortcut, block, depth, threads):
    """Logits, input gradient, every parameter gradient and the BN statistics."""
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8))
    dlogits = np.random.default_rng(1).standard_normal((3, 10))
    runs = []
    for policy in POLICIES:
        model = models.cifar_resnet(depth=depth, block=block, se=se, shortcut=shortcut, seed=1,
                                    widths=(4, 8, 8), se_reduction=2, dtype="float64")
        model.use_policy(policy)
        logits = model(x)
        dx = model.backward(dlogits)
        model.eval()
        with nn.no_grad():
            lean = model(x)
        runs.append([logits, dx, lean] + [p.grad for _, p in model.named_parameters()]
                    + [b for _, b in model.named_buffers()])
    for policy, run in zip(POLICIES[1:], runs[1:]):
        _assert_agree(run, runs[0], policy.name)


def test_models_store_activations_as_their_policy_says():
    """A model starts under the reference policy (its caller chooses speed) and follows the
    policy it is given."""
    model = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8), dtype="float64")
    x = np.zeros((2, 3, 8, 8))
    assert model.policy is REFERENCE
    assert all(getattr(m, "formulation", None) is None for _, m in model.named_modules())
    model(x)
    assert not is_channels_last(model.layer1[0].se._cache["scale_cache"][0])
    model.use_policy(FAST)
    assert FAST.stores_channels_last(np)
    model(x)
    assert is_channels_last(model.layer1[0].se._cache["scale_cache"][0])
    assert isinstance(model.conv1.formulation, fast.conv2d.Conv2dFormulations)
    model.use_policy(REFERENCE)
    assert all(getattr(m, "formulation", None) is None for _, m in model.named_modules())
    model(x)
    assert not is_channels_last(model.layer1[0].se._cache["scale_cache"][0])
    with pytest.raises(TypeError, match=r"CifarResNet.use_policy: expected an npse.fast.ExecutionPolicy, got str"):
        model.use_policy("fast")


def test_the_policy_is_in_neither_config_nor_state_dict():
    a = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8)).use_policy(FAST)
    b = models.cifar_resnet(depth=8, se="standard", widths=(4, 8, 8)).use_policy(REFERENCE)
    assert a.config == b.config and "policy" not in str(a.config)
    assert list(a.state_dict()) == list(b.state_dict())
    assert not any("formulation" in k or "policy" in k for k in a.state_dict())


@pytest.mark.parametrize("fixture", ["old_se_resnet8.npz", "old_nosqueeze_b.npz"])
@pytest.mark.parametrize("policy", [FAST, REFERENCE], ids=["fast", "reference"])
def test_checkpoints_written_before_the_policies_still_load(fixture, policy):
    """tests/fixtures/make_old_checkpoints.py wrote these with npse at 595bb22, before npse.fast:
    they load, and give the logits that code computed, under either policy."""
    with CheckpointReader(ROOT / "tests" / "fixtures" / fixture) as reader:
        model = model_from_checkpoint(reader, reader.meta["model_config"]).use_policy(policy)
        x, logits = reader.read("check.x"), reader.read("check.logits")
    model.eval()
    with nn.no_grad():
        assert relative_error(model(x), logits) <= 1e-12


def test_training_prints_its_policy_and_runs_the_same_under_the_reference(tmp_path):
    """train() logs the policy in force; a short float64 run under REFERENCE ends where the fast
    one does (losses and accuracies to rounding), through train_step and the epoch loop."""
    from test_train import tiny, write_cifar10
    from npse.train import train
    data = write_cifar10(tmp_path / "data")
    results = {}
    for policy in (FAST, REFERENCE):
        lines = []
        results[policy.name] = train(tiny(tmp_path, data, policy.name, dtype="float64"),
                                     log=lines.append, policy=policy)
        assert policy.describe() in lines
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert results["reference"][key] == pytest.approx(results["fast"][key], rel=1e-9), key


# --- the policy ------------------------------------------------------------------------------------
def test_policy_decisions_follow_its_thresholds():
    class CuPyLike:
        __name__ = "cupy"
    cupy = CuPyLike()
    assert FAST.uses_per_image(np, (32, 32)) and FAST.uses_per_image(np, (16, 16))
    assert not FAST.uses_per_image(np, (8, 8)) and not FAST.uses_per_image(cupy, (32, 32))
    assert FAST.uses_kernel_rows(np, 16, (1, 1)) and not FAST.uses_kernel_rows(np, 32, (1, 1))
    assert not FAST.uses_kernel_rows(np, 16, (2, 1)) and not FAST.uses_kernel_rows(cupy, 3, (1, 1))
    assert FAST.uses_fused(cupy) and not FAST.uses_fused(np)
    assert not FAST.replace(fused=False).uses_fused(cupy) and not REFERENCE.uses_fused(cupy)
    assert FAST.stores_channels_last(np) and not FAST.stores_channels_last(cupy)
    assert FAST.replace(memory_format="channels_last").stores_channels_last(cupy)
    assert not REFERENCE.stores_channels_last(np)
    assert "channels last on NumPy" in FAST.describe() and "reference" in REFERENCE.describe()


def test_policy_refuses_unknown_choices():
    with pytest.raises(ValueError, match=r"ExecutionPolicy: memory_format must be one of"):
        ExecutionPolicy(memory_format="nchw")
    with pytest.raises(ValueError, match=r"ExecutionPolicy: input_gradient must be one of"):
        ExecutionPolicy(input_gradient="fft")
    with pytest.raises(ValueError, match=r"ExecutionPolicy: per_image_min_pixels must be an int >= 0, got -1"):
        ExecutionPolicy(per_image_min_pixels=-1)


def test_nothing_in_nn_imports_fast():
    """The reference never depends on the formulations (npse.fast imports npse.nn)."""
    for path in sorted((ROOT / "npse" / "nn").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("fast" in n.split(".") for n in names), (path.name, names)


def test_nn_holds_no_speed_code():
    """The memory format, the kept buffers and the bench's cost model live in npse.fast."""
    assert not any((ROOT / "npse" / "nn" / f"{name}.py").exists() for name in ("layout", "workspace"))
    assert not hasattr(nn.Conv2d, "products")
    assert not any(name.startswith(("npse.nn.layout", "npse.nn.workspace")) for name in sys.modules)


def _defines_formulations(module) -> bool:
    """Whether ``module`` defines (not imports) a formulation: a class with ``forward`` and
    ``backward``, or one named ...Formulation(s) or ...Update, or a function named
    ..._forward / ..._backward. (The registry's own records of formulations are none.)"""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__ or obj in RECORDS:
            continue
        if inspect.isclass(obj) and (name.endswith(("Formulation", "Formulations", "Update"))
                                     or (hasattr(obj, "forward") and hasattr(obj, "backward"))):
            return True
        if inspect.isfunction(obj) and name.endswith(("_forward", "_backward")):
            return True
    return False


RECORDS = (fast.Formulation, fast.UpdateFormulation)


def _unregistered(modules) -> list:
    registered = {f.module for f in FORMULATIONS} | {u.module for u in UPDATES}
    return [m.__name__ for m in modules if _defines_formulations(m) and m.__name__ not in registered]


def test_every_module_of_fast_that_defines_a_formulation_registers_it():
    """A formulation nothing registers would never run in a model, nor be checked here."""
    modules = [importlib.import_module(f"npse.fast.{info.name}")
               for info in pkgutil.iter_modules(fast.__path__)]
    assert len(modules) >= 12 and sum(map(_defines_formulations, modules)) >= 5
    assert _unregistered(modules) == []
    # ... and the check does catch one: a module with a formulation class and no register() call
    forgotten = types.ModuleType("npse.fast.forgotten")
    exec("class DepthwiseFormulation:\n    def forward(self, x): return x\n"
         "    def backward(self, dy, cache): return dy\n", vars(forgotten))
    assert _unregistered([forgotten]) == ["npse.fast.forgotten"]


# --- the pieces the formulations are built from ----------------------------------------------------
@given(case=window_cases())
def test_patch_arrangements_hold_im2cols_numbers(backend_name, case):
    with UseBackend(backend_name):
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.c, case.h, case.w)), backend_name)
        cols = nn.im2col(x, case.kernel, case.stride, case.padding)
        (kh, kw), c = case.kernel, case.c
        assert (patches.columns(x, case.kernel, case.stride, case.padding) == cols).all()
        per_image = patches.columns_per_image(x, case.kernel, case.stride, case.padding)
        n, k, pixels = per_image.shape
        assert (per_image.transpose(1, 0, 2).reshape(k, n * pixels) == cols).all()
        rows = patches.patch_rows(nhwc(x), case.kernel, case.stride, case.padding)
        assert (rows == cols.reshape(c, kh, kw, -1).transpose(3, 1, 2, 0).reshape(rows.shape)).all()


@given(case=window_cases())
def test_patch_rows_adjoint_is_the_adjoint_of_patch_rows(backend_name, case):
    """<patch_rows(x), r> == <x, patch_rows_adjoint(r)> for all x and r."""
    with UseBackend(backend_name) as xp:
        rng = np.random.default_rng(case.seed)
        x = to_backend(normal(rng, (case.n, case.h, case.w, case.c)), backend_name)
        rows = patches.patch_rows(x, case.kernel, case.stride, case.padding)
        r = xp.asarray(normal(rng, rows.shape))
        back = patches.patch_rows_adjoint(r, (case.n, case.c, case.h, case.w), case.kernel,
                                          case.stride, case.padding)
        assert back.shape == x.shape
        lhs, rhs = float((rows * r).sum()), float((x * back).sum())
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@given(n=batch, c=st.integers(1, 6), h=st.integers(1, 5), w=st.integers(1, 5), seed=seeds,
       channels_last=st.booleans())
def test_reductions_equal_the_plain_sums(n, c, h, w, seed, channels_last):
    rng = np.random.default_rng(seed)
    a, b = normal(rng, (n, c, h, w)), normal(rng, (n, c, h, w))
    if channels_last:
        a, b = to_channels_last(a), to_channels_last(b)
    np.testing.assert_allclose(spatial_dot(a, b), (a * b).sum(axis=(2, 3)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(spatial_mean(a), a.mean(axis=(2, 3)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(channel_dot(a, b), (a * b).sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(channel_sum(np.ascontiguousarray(a)), a.sum(axis=(0, 2, 3)),
                               rtol=1e-10, atol=1e-12)
    rows = fast.batchnorm2d.channel_view(a)
    assert isinstance(rows, fast.batchnorm2d.ChannelsLastRows) == is_channels_last(a)
    np.testing.assert_allclose(rows.sum(rows.matrix(a)), a.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12)
    assert (rows.array(rows.matrix(a)) == a).all()


def test_workspace_buffers_never_leak_into_outputs_and_stay_bounded():
    """Outputs are new arrays; batches of changing size replace a layer's buffers instead of
    piling them up; under no_grad the model's shared buffers are used, not the layer's own."""
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    conv.formulation = fast.conv2d.Conv2dFormulations(FAST, SharedWorkspaces(), layout="batch")
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 1, 2, 5, 5)).astype(np.float32)
    y1 = conv(x1)
    kept = y1.copy()
    conv(x2)
    assert (y1 == kept).all()
    for n in (4, 3, 5, 4):
        y = conv(rng.standard_normal((n, 2, 6, 6)).astype(np.float32))
        conv.backward(np.ones_like(y))
    # float32 columns (18, 4*36) + padded input (4, 2, 8, 8) + product (3, 4*36), all for n = 4
    before = conv.formulation.workspace.nbytes()
    assert before == 4 * (18 * 4 * 36 + 4 * 2 * 8 * 8 + 3 * 4 * 36)
    with nn.no_grad():
        conv(rng.standard_normal((50, 2, 6, 6)).astype(np.float32))
    assert conv.formulation.workspace.nbytes() == before


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_conv_products_are_well_formed_under_every_policy(policy):
    """conv_products (what npse bench times; tests/test_bench.py checks the shapes of the
    default policy's) gives matching product shapes for the input each convolution receives,
    recorded by a forward hook."""
    model = models.cifar_resnet(depth=8, widths=(4, 8, 8)).use_policy(policy)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    inputs = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, x, y, _n=name: inputs.setdefault(_n, (x.shape, is_channels_last(x))))
    model(x)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shape, channels_last = inputs[name]
            products = conv_products(m, shape, channels_last, input_grad=name != "conv1")
            assert len(products) == (2 if name == "conv1" else 3)
            for a, b, times in products:
                assert a[-1] == b[-2] and times >= 1         # inner sizes match
