"""Module, Parameter, Sequential and no_grad: the contract every layer follows.

Shaped like PyTorch's ``torch.nn.Module`` so users recognise it, but with an explicit backward:

* ``y = m(x)`` runs ``m.forward(x)`` and (unless inside :func:`no_grad`) keeps a cache;
* ``dx = m.backward(dy)`` returns dL/dx and *adds* dL/dparam into each ``param.grad``;
  ``dy`` is never modified in place.

Chapter: docs/02-module.md.
"""
from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict

import numpy

from .. import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this context forward passes keep no cache: lean evaluation, but no backward."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def grad_enabled() -> bool:
    """False inside :func:`no_grad`."""
    return _grad_enabled


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (same shape, same dtype)."""

    def __init__(self, data):
        self.data = data
        self.grad = backend.get_array_module(data).zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and network.

    Parameters, buffers and child modules are registered by assignment (``self.fc1 = Linear(...)``)
    in the order they are assigned; that order is the order of :meth:`named_parameters` and of
    :meth:`state_dict`, as in PyTorch.
    """

    def __init__(self, dtype=None):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        self.training = True
        self.dtype = backend.check_float_dtype(
            backend.default_dtype() if dtype is None else dtype, type(self).__name__
        )
        self._cache = None

    # --- registration -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value) -> None:
        """A non-trainable array saved in the state dict (BatchNorm's running statistics)."""
        self._buffers[name] = None
        object.__setattr__(self, name, value)

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = ""):
        """``(dotted_name, parameter)`` over this module and its children, in registration order."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, child in self._modules.items():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for name in self._buffers:
            yield (f"{prefix}.{name}" if prefix else name), getattr(self, name)
        for name, child in self._modules.items():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    # --- modes and gradients ------------------------------------------------------------------
    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    # --- forward / backward -------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        # Every backward a subclass defines first checks dy against the output of the forward
        # pass (see _check_upstream): one check for every layer and every formulation.
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:
            cls.backward = _checks_upstream(cls.__dict__["backward"])

    def register_forward_hook(self, hook):
        """Call ``hook(module, x, y)`` after every forward pass run through ``module(x)`` (as
        PyTorch's); returns a handle whose ``remove()`` takes it off. ``npse bench`` records the
        input each layer receives this way."""
        hooks = self.__dict__.setdefault("_forward_hooks", {})
        key = max(hooks, default=-1) + 1
        hooks[key] = hook
        return _HookHandle(hooks, key)

    def __call__(self, x):
        y = self.forward(x)
        for hook in list(self.__dict__.get("_forward_hooks", {}).values()):
            hook(self, x, y)
        # What backward's dy must look like: kept only when a backward can follow.
        self._output = (tuple(y.shape), y.dtype) if _grad_enabled and hasattr(y, "shape") else None
        return y

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    def _save(self, cache):
        """Keep ``cache`` for backward, except under :func:`no_grad`."""
        self._cache = cache if _grad_enabled else None

    def _check_upstream(self, dy) -> None:
        """Refuse a ``dy`` whose shape or dtype differs from the output of the last forward pass
        run through ``m(x)`` (either memory format: only shape and dtype are compared). Without
        it, broadcasting or a reshape would turn a wrong dy into a wrong dx, silently."""
        expected = self.__dict__.get("_output")
        if expected is None or not hasattr(dy, "shape") or not hasattr(dy, "dtype"):
            return
        shape, dtype = expected
        if tuple(dy.shape) != shape or dy.dtype != dtype:
            # The expected shape is kept: a second try with the same wrong dy must be refused too.
            raise ValueError(f"{type(self).__name__}.backward: dy has shape {tuple(dy.shape)} and "
                             f"dtype {dy.dtype}, but the forward pass produced shape {shape} and "
                             f"dtype {dtype}")
        self._output = None

    def _take_cache(self):
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a forward pass that kept its cache "
                "(was forward run inside npse.nn.no_grad(), or backward called twice?)"
            )
        cache, self._cache = self._cache, None
        return cache

    def _check_input(self, x, ndim: int, channels: int | None = None, channel_axis: int = 1,
                     what: str = "input"):
        """Raise a clear error for a wrong type, rank, dtype or channel count."""
        check_array(x, type(self).__name__, ndim, self.dtype, channels, channel_axis, what)

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, object]":
        """Parameters and buffers by their PyTorch names, as arrays of the module's backend."""
        out = OrderedDict()
        self._collect_state("", out)
        return out

    def _collect_state(self, prefix, out):
        for name, p in self._parameters.items():
            out[prefix + name] = p.data
        for name in self._buffers:
            out[prefix + name] = getattr(self, name)
        for name, child in self._modules.items():
            child._collect_state(f"{prefix}{name}.", out)

    def load_state_dict(self, state) -> None:
        """Copy arrays (NumPy or CuPy) into this module's parameters and buffers.

        The keys and shapes must match :meth:`state_dict` exactly; a missing, unexpected or wrongly
        shaped entry is a ``ValueError`` that names it. Values are cast to the module's dtype.
        All or nothing: after an error the module holds exactly what it held before.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        if missing or extra:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected keys {extra}"
            )
        # Every value is checked and converted before any is stored: a failure on one entry leaves
        # the module as it was, never half loaded.
        converted = []
        for key, target in own.items():
            given = state[key]
            if tuple(numpy.shape(given)) != tuple(target.shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: '{key}' has shape "
                    f"{tuple(numpy.shape(given))}, expected {tuple(target.shape)}"
                )
            kind = numpy.dtype(getattr(given, "dtype", numpy.asarray(given).dtype)).kind
            if kind not in "biuf":
                raise ValueError(f"{type(self).__name__}.load_state_dict: '{key}' has dtype "
                                 f"{getattr(given, 'dtype', type(given).__name__)}, expected a "
                                 f"real number array ({target.dtype})")
            converted.append((target, self._converted(key, given, target, kind)))
        for target, value in converted:
            target[...] = value

    def _converted(self, key, given, target, kind):
        """``given`` as ``target``'s dtype on ``target``'s backend, refusing a value that the
        conversion would change: a finite number out of the target's range (1e40 into float32
        becomes inf), or a fraction into an integer buffer (3.7 steps would become 3)."""
        where = f"{type(self).__name__}.load_state_dict: '{key}'"
        host = numpy.asarray(backend.to_host(given))
        target_dtype = numpy.dtype(target.dtype)
        if target_dtype.kind in "iu" and kind == "f":
            if not numpy.all(numpy.isfinite(host)) or numpy.any(host != numpy.round(host)):
                raise ValueError(f"{where} holds non-integer values, expected {target_dtype} "
                                 f"(a count such as num_batches_tracked)")
        if target_dtype.kind == "f" and kind in "biuf" and host.size:
            finite = numpy.isfinite(host.astype(numpy.float64))
            biggest = float(numpy.abs(host[finite]).max()) if finite.any() else 0.0
            largest = float(numpy.finfo(target_dtype).max)
            if biggest > largest:
                raise ValueError(f"{where} holds {biggest:.3g}, beyond the largest "
                                 f"{target_dtype} ({largest:.3g})")
        xp = backend.get_array_module(target)
        try:
            with numpy.errstate(over="raise", invalid="raise"):
                return xp.asarray(backend.to_device(given, backend.backend_of(target)),
                                  dtype=target.dtype)
        except (TypeError, ValueError, FloatingPointError, OverflowError) as e:
            raise ValueError(f"{where} cannot be converted to {target.dtype}: {e}") from None

    def to(self, name: str):
        """Move every parameter, gradient and buffer to backend ``name`` ('numpy' or 'cupy')."""
        backend.module(name)  # raises a clear error if the backend is not usable
        for _, m in self.named_modules():
            for p in m._parameters.values():
                p.data = backend.to_device(p.data, name)
                p.grad = backend.to_device(p.grad, name)
            for b in m._buffers:
                object.__setattr__(m, b, backend.to_device(getattr(m, b), name))
            m._cache = None
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


def check_array(x, layer: str, ndim: int, dtype=None, channels=None, channel_axis=1,
                what: str = "input"):
    """Shared input validation: names ``layer`` and the expected and given values."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{layer}: {what} must be a NumPy or CuPy array, got {type(x).__name__}")
    kind = numpy.dtype(x.dtype).kind
    if kind != "f":
        raise TypeError(f"{layer}: {what} must be a floating-point array, got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(
            f"{layer}: {what} must have {ndim} dimensions, got {x.ndim} (shape {tuple(x.shape)})"
        )
    if dtype is not None and x.dtype != dtype:
        # Layers are float32 or float64 (backend.check_float_dtype): suggest only what exists.
        supported = x.dtype in (numpy.float32, numpy.float64)
        remedy = (f" or build the layer with dtype={x.dtype}" if supported
                  else "; layers compute in float32 or float64 only")
        raise TypeError(
            f"{layer}: {what} has dtype {x.dtype} but the layer is {numpy.dtype(dtype)}; "
            f"cast the input (x.astype({str(numpy.dtype(dtype))!r})){remedy}"
        )
    if channels is not None and x.shape[channel_axis] != channels:
        raise ValueError(
            f"{layer}: {what} has {x.shape[channel_axis]} channels (axis {channel_axis}, shape "
            f"{tuple(x.shape)}), expected {channels}"
        )


class _HookHandle:
    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


def float_dtype_of(x):
    """The dtype a parameter-free layer (pooling, activations) computes in: the input's own when
    it is float32 or float64, as PyTorch's such layers do; float32 otherwise, so that
    :func:`check_array` names the wrong dtype."""
    dtype = getattr(x, "dtype", None)
    return dtype if dtype in (numpy.float32, numpy.float64) else numpy.dtype(numpy.float32)


def _checks_upstream(backward):
    """``backward`` preceded by :meth:`Module._check_upstream`."""
    @functools.wraps(backward)
    def checked(self, dy, *args, **kwargs):
        self._check_upstream(dy)
        return backward(self, dy, *args, **kwargs)
    return checked


class Sequential(Module):
    """Modules run one after another; backward runs them in reverse."""

    def __init__(self, *modules, dtype=None):
        super().__init__(dtype=dtype)
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, dy):
        for m in reversed(self._modules.values()):
            dy = m.backward(dy)
        return dy


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x):
        self._save(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._take_cache())
