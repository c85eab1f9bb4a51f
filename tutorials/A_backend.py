# %% [markdown]
# # Tutorial A: the array-module shim
#
# The companion of [appendix A](../docs/A-backend.md): each step below runs what the chapter
# explains and asserts what it claims.
#
# Every layer in npse asks `npse.backend` which array module ("xp") to use instead of importing
# NumPy directly. This script shows how that choice is made, how weights are drawn so that one
# seed
# gives the same network on NumPy and on CuPy, and which mistakes are refused with a clear error.
#
# Run it as a script, `python tutorials/A_backend.py`, or open it as a notebook
# (`pip install -e '.[notebooks]'`, then `jupyter lab`; the README says more).

# %%
import numpy as np

from npse import backend, nn


# %% [markdown]
# ## 1. Which backend is active?
#
# The default comes from the environment variable NPSE_BACKEND ("numpy" unless you set it).
#
# Explained in [appendix A](../docs/A-backend.md).

# %%
print("active backend      :", backend.get_backend())
print("its array module    :", backend.module().__name__)
print("CuPy with a GPU?    :", backend.cupy_available())


# %% [markdown]
# ## 2. get_array_module: the array decides
#
# A layer's forward function calls get_array_module(x, weight, ...) and then uses xp.zeros,
# xp.exp, ... so the same code runs wherever its inputs live. `None` arguments are ignored (a
# layer without a bias passes bias=None).
#
# Explained in [appendix A](../docs/A-backend.md).

# %%
x = np.ones((2, 3))
xp = backend.get_array_module(x, None)
print("module holding x    :", xp.__name__, "| backend_of(x) =", backend.backend_of(x))
# With no arrays at all, the active backend is the answer (used when a module creates its buffers).
print("module with no args :", backend.get_array_module().__name__)
assert xp is np and backend.backend_of(x) == "numpy"
assert backend.get_array_module() is backend.module()


# %% [markdown]
# ## 3. One seed, one network, whatever the backend
#
# Weights are drawn on the host by numpy.random.default_rng(seed) and only then moved to the
# backend, so the numbers never depend on CuPy's random generator.
#
# Explained in [appendix A](../docs/A-backend.md).

# %%
a = nn.Linear(4, 3, rng=0)
b = nn.Linear(4, 3, rng=0)
print("same seed, same weights:", np.array_equal(a.weight.data, b.weight.data))
print("default dtype       :", backend.default_dtype(), "| layer dtype:", a.weight.dtype)
assert np.array_equal(a.weight.data, b.weight.data) and a.weight.dtype == np.float32

if backend.cupy_available():
    backend.set_backend("cupy")
    g = nn.Linear(4, 3, rng=0)                       # drawn on the host, stored on the GPU
    backend.set_backend("numpy")
    print("GPU copy equals CPU copy:", np.array_equal(backend.to_host(g.weight.data), a.weight.data))
    assert np.array_equal(backend.to_host(g.weight.data), a.weight.data)
    # Mixing the two kinds of array in one operation is refused:
    try:
        backend.get_array_module(np.ones(2), g.weight.data)
    except TypeError as e:
        print("mixing backends     : TypeError:", str(e)[:60], "...")
    else:
        raise AssertionError("a NumPy and a CuPy array together must be refused")
else:
    print("(no CuPy/GPU here: with one, the same seed would give the same weights on the GPU, and")
    print(" passing a NumPy and a CuPy array to one layer would raise a TypeError)")


# %% [markdown]
# ## 4. Dtypes are checked, not silently converted
#
# A float32 layer refuses float64 input instead of promoting it (a silent promotion would make
# every later layer run in float64 and twice as slowly).
#
# Explained in [appendix A](../docs/A-backend.md).

# %%
try:
    a(np.ones((2, 4)))                                  # float64 input, float32 layer
except TypeError as e:
    print("dtype mismatch      : TypeError:", e)
    assert "Linear" in str(e) and "float64" in str(e) and "float32" in str(e)   # names both dtypes
else:
    raise AssertionError("a float64 input to a float32 layer must be refused")
try:
    backend.check_float_dtype("float16", "demo")       # only float32 and float64 are supported
except TypeError as e:
    print("unsupported dtype   : TypeError:", e)
else:
    raise AssertionError("float16 must be refused")

# Gradient checks need float64 layers: either pass dtype= to each layer ...
print("float64 layer       :", nn.Linear(4, 3, dtype="float64", rng=0).weight.dtype)
# ... or change the default for a while (and put it back).
backend.set_default_dtype("float64")
print("after set_default_dtype('float64'):", nn.Linear(4, 3, rng=0).weight.dtype)
assert nn.Linear(4, 3, rng=0).weight.dtype == np.float64
backend.set_default_dtype("float32")
