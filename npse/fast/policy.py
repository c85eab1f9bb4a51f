"""The execution policy: every choice of *how* a model computes, in one object.

What a model computes is fixed by its layers (npse.nn, the reference). How fast it gets there is
chosen here, and only here: the memory format of the activations, which formulation of each
layer runs (npse.fast), the thresholds between them, the route to a convolution's input
gradient, the fused CuPy kernels, the kept buffers. A model owns one policy
(``model.use_policy(policy)``): it starts under :data:`REFERENCE`, and its caller chooses
:data:`FAST`; ``npse train`` and ``npse bench`` print it. It is never part of a model's config or state_dict: the same weights give the same numbers
(to rounding) under every policy, which tests/test_formulations.py checks.

Chapter: docs/B-speed.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
INPUT_GRADIENT_ROUTES = ("convolution", "col2im")
CONV_LAYOUTS = ("batch", "per_image", "patch_rows", "kernel_rows")


@dataclass(frozen=True)
class ExecutionPolicy:
    """How a model computes (never what).

    ``formulations``: False runs every layer's reference functions (npse.nn) and nothing else;
    the other fields then do not apply.
    ``memory_format``: how the model stores its activations (npse.fast.layout): "auto" is channels
    last on NumPy, where that measured faster, and contiguous on CuPy.
    ``per_image_min_pixels``: contiguous NumPy convolutions with at least this many output pixels
    per image run one product per image (measured: faster at 32x32 and 16x16, slower at 8x8).
    ``kernel_rows_max_channels``: channels-last NumPy stride-1 convolutions over at most this many
    input channels run by kernel rows (measured: faster at 16 channels, slower at 32 and 64).
    ``patch_block_bytes``: a channels-last convolution copies the patches of a few images at a
    time, about this many bytes, and multiplies them while they are still in the cache (measured
    on a 2-core AMD EPYC: a stage-1 forward about a third faster than one copy of the whole batch
    and then one product); 0 copies a thread's whole slice of the batch first.
    ``input_gradient``: a stride-1 convolution's dx as a convolution of dy, or by col2im.
    ``fused``: the fused CuPy kernels (BatchNorm, the SGD update); CuPy only.
    ``workspaces``: keep big scratch arrays from step to step instead of allocating them again.
    """

    name: str = "fast"
    formulations: bool = True
    memory_format: str = "auto"
    per_image_min_pixels: int = 256
    kernel_rows_max_channels: int = 16
    patch_block_bytes: int = 1 << 20
    input_gradient: str = "convolution"
    fused: bool = True
    workspaces: bool = True

    def __post_init__(self):
        for field, allowed in (("memory_format", MEMORY_FORMATS),
                               ("input_gradient", INPUT_GRADIENT_ROUTES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"ExecutionPolicy: {field} must be one of {allowed}, "
                                 f"got {getattr(self, field)!r}")
        for field in ("per_image_min_pixels", "kernel_rows_max_channels", "patch_block_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ExecutionPolicy: {field} must be an int >= 0, got {value!r}")

    def replace(self, **changes) -> "ExecutionPolicy":
        """A copy with ``changes`` (e.g. ``FAST.replace(fused=False, name="unfused")``)."""
        return dataclasses.replace(self, **changes)

    # --- the decisions, one function each ------------------------------------------------------
    def stores_channels_last(self, xp) -> bool:
        """Whether a model under this policy converts its input to channels last on ``xp``."""
        if not self.formulations or self.memory_format == "contiguous":
            return False
        return self.memory_format == "channels_last" or xp.__name__ == "numpy"

    def uses_per_image(self, xp, out_size) -> bool:
        """Whether a contiguous convolution with ``out_size`` = (OH, OW) runs one product per image."""
        return xp.__name__ == "numpy" and out_size[0] * out_size[1] >= self.per_image_min_pixels

    def uses_kernel_rows(self, xp, channels, stride) -> bool:
        """Whether a channels-last convolution over ``channels`` input channels runs by kernel rows."""
        return (xp.__name__ == "numpy" and tuple(stride) == (1, 1)
                and channels <= self.kernel_rows_max_channels)

    def images_per_block(self, xp, bytes_per_image) -> int | None:
        """How many images' patches a convolution copies and multiplies at a time (None: a
        thread's whole slice at once, as on CuPy)."""
        if xp.__name__ != "numpy" or not self.patch_block_bytes:
            return None
        return max(1, self.patch_block_bytes // max(1, bytes_per_image))

    def uses_fused(self, xp) -> bool:
        """Whether code on array module ``xp`` takes its fused CuPy kernels."""
        return self.formulations and self.fused and xp.__name__ == "cupy"

    def describe(self) -> str:
        """One line for a log: ``npse train`` and ``npse bench`` print it."""
        if not self.formulations:
            return f"execution policy {self.name!r}: the reference layers of npse.nn, activations contiguous"
        memory = {"auto": "channels last on NumPy, contiguous on CuPy"}.get(
            self.memory_format, self.memory_format.replace("_", " "))
        return (f"execution policy {self.name!r}: activations {memory}; convolutions per image "
                f"from {self.per_image_min_pixels} output pixels, by kernel rows up to "
                f"{self.kernel_rows_max_channels} channels, patches {self.patch_block_bytes // 1024} KiB "
                f"at a time, stride-1 dx by "
                f"{self.input_gradient}; fused CuPy kernels {'on' if self.fused else 'off'}; "
                f"workspaces {'on' if self.workspaces else 'off'}")


#: Every formulation where it measured faster: what npse train, bench and evaluate choose.
FAST = ExecutionPolicy()
#: The reference layers only (npse.nn), activations contiguous: what a student reads.
REFERENCE = ExecutionPolicy(name="reference", formulations=False, memory_format="contiguous",
                            fused=False, workspaces=False)


def policy_from_memory_format(memory_format: str, fused: bool = True, reference: bool = False):
    """The policy of the command-line options ``--memory-format``, ``--no-fused``, ``--reference``."""
    if reference:
        return REFERENCE
    name = "fast" if memory_format == "auto" and fused else f"fast ({memory_format}{'' if fused else ', unfused'})"
    return FAST.replace(name=name, memory_format=memory_format, fused=fused)
