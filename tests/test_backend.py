"""The array-module shim: layers take their array module from it, and misuse is a clear error."""
import ast
import pathlib

import numpy as np
import pytest

from npse import backend, nn

PACKAGE = pathlib.Path(nn.__file__).parent


def test_layers_never_import_numpy_for_array_math():
    """npse/nn may import numpy only for dtypes and host-side checks, never as `np` for math.

    The rule: inside npse/nn a module-level `import numpy` is allowed only in files that use it for
    `numpy.dtype`, `numpy.shape`, `numpy.prod` of shapes, host random numbers or a host-side check
    of a value given by the user (se_block.py: ``fix_gate``) — listed here — and
    `import numpy as np` is not allowed at all.
    """
    allowed = {"module.py", "init.py", "loss.py", "se_block.py"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                aliases = [a.asname for a in node.names]
                if any(n.split(".")[0] == "numpy" for n in names):
                    assert path.name in allowed, f"{path.name} imports numpy directly"
                    assert "np" not in aliases, f"{path.name} imports numpy as np"


class RecordingModule:
    """A stand-in for the NumPy module that records which functions the layers call."""

    def __init__(self, real):
        self._real = real
        self.calls = set()

    def __getattr__(self, name):
        self.calls.add(name)
        return getattr(self._real, name)


@pytest.fixture
def recorder(monkeypatch):
    rec = RecordingModule(np)
    monkeypatch.setitem(backend._modules, "numpy", rec)
    return rec


def test_every_layer_gets_its_array_module_from_the_shim(recorder):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    layers = [nn.Conv2d(4, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(), nn.SEBlock(4, 2, rng=0),
              nn.MaxPool2d(2), nn.AvgPool2d(3, 1, 1), nn.Sigmoid(), nn.Tanh()]
    for layer in layers:
        recorder.calls.clear()
        y = layer(x)
        layer.backward(np.ones_like(y))
        assert recorder.calls, f"{type(layer).__name__} did not use the shim's array module"
    recorder.calls.clear()
    for pool in (nn.GlobalAvgPool2d(), nn.GlobalMaxPool2d()):
        z = pool(x)
        fc = nn.Linear(4, 3, rng=0)
        fc.backward(np.ones_like(fc(z)))
        pool.backward(np.ones_like(z))
    loss = nn.CrossEntropyLoss()
    loss(rng.standard_normal((3, 4)).astype(np.float32), np.array([0, 1, 3]))
    loss.backward()
    assert {"broadcast_to", "arange", "exp", "log1p", "expm1", "take_along_axis", "zeros"} <= recorder.calls


class FakeCupyArray:
    """Looks like a CuPy array to the shim (its type lives in a module named cupy)."""
    shape, dtype, ndim = (1, 1, 2, 2), np.dtype(np.float32), 4


FakeCupyArray.__module__ = "cupy._core.core"


def test_mixing_numpy_and_cupy_arrays_is_an_error():
    with pytest.raises(TypeError, match=r"arrays from NumPy and CuPy were mixed"):
        backend.get_array_module(np.zeros(2), FakeCupyArray())
    with pytest.raises(TypeError, match=r"arrays from NumPy and CuPy were mixed"):
        nn.conv2d_forward(np.zeros((1, 1, 2, 2), np.float32), FakeCupyArray())


def test_dtype_mismatch_is_an_error_not_an_upcast():
    with pytest.raises(TypeError, match=r"BatchNorm2d: input has dtype float64 but the layer is float32"):
        nn.BatchNorm2d(2)(np.zeros((2, 2, 2, 2)))
    with pytest.raises(TypeError, match=r"SEBlock: input has dtype float32 but the layer is float64"):
        nn.SEBlock(2, dtype="float64")(np.zeros((2, 2, 2, 2), np.float32))


def test_backend_switching_and_errors(monkeypatch):
    assert backend.get_backend() == "numpy"
    with pytest.raises(ValueError, match=r"npse backend must be one of \('numpy', 'cupy'\), got 'jax'"):
        backend.set_backend("jax")
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match=r"CuPy"):
            backend.set_backend("cupy")
        assert backend.get_backend() == "numpy"
    assert backend.to_host(np.arange(3)).tolist() == [0, 1, 2]
    assert backend.default_dtype() == np.float32
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got int32"):
        backend.set_default_dtype("int32")


def test_one_seed_gives_the_same_weights():
    a, b = nn.Conv2d(3, 8, 3, rng=7), nn.Conv2d(3, 8, 3, rng=7)
    assert (a.weight.data == b.weight.data).all()
    assert not (a.weight.data == nn.Conv2d(3, 8, 3, rng=8).weight.data).all()


def test_numpy_backend_env_var_is_validated(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import npse.backend"], env={"NPSE_BACKEND": "tpu", "PATH": ""},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "NPSE_BACKEND must be one of" in r.stderr
