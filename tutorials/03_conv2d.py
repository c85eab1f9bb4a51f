"""Tutorial 3: im2col, col2im and Conv2d (chapter: docs/03-conv2d.md).

Run:  python tutorials/03_conv2d.py
"""
import numpy as np

from npse import nn
from npse.gradcheck import gradcheck
from npse.nn import col2im, im2col, im2col_per_image
from npse.nn.conv2d import conv2d_by_kernel_rows, kernel_row_patches
from npse.nn.im2col import im2col_channels_last
from npse.nn.layout import is_channels_last, nhwc, to_channels_last

np.set_printoptions(linewidth=110)

# --- 1. im2col on a tiny input --------------------------------------------------------------------
# One image, one channel, 3x4 pixels numbered 0..11; a 2x2 kernel with stride 1 and no padding.
x = np.arange(12, dtype=np.float64).reshape(1, 1, 3, 4)
print("x[0, 0] =\n", x[0, 0])
cols = im2col(x, (2, 2), (1, 1), (0, 0))
# OH = (3 - 2)//1 + 1 = 2, OW = (4 - 2)//1 + 1 = 3: six patches, each a column of C*KH*KW = 4 rows.
print("\nim2col(x), shape", cols.shape, "(rows: ky,kx = 00 01 10 11; columns: oy,ox in C order)\n", cols)
assert cols.shape == (4, 6) and list(cols[:, 0]) == [0, 1, 4, 5]      # column 0: the top-left patch

# With two images and two channels the rows run over (c, ky, kx) and the columns over (n, oy, ox).
x2 = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3)
cols2 = im2col(x2, (2, 2), (1, 1), (0, 0))
print("\nN=2, C=2, 3x3 input, 2x2 kernel -> cols shape", cols2.shape, "= (C*KH*KW, N*OH*OW) = (8, 2*2*2)")
print("column 4 (n=1, oy=0, ox=0) is image 1's top-left patch of both channels:", cols2[:, 4])
assert cols2.shape == (8, 8)
assert np.array_equal(cols2[:, 4], np.concatenate([x2[1, c, 0:2, 0:2].ravel() for c in range(2)]))

# Padding and stride change OH, OW through floor((H + 2P - K) / S) + 1:
for h, k, s, p in [(32, 3, 1, 1), (32, 3, 2, 1), (7, 3, 2, 0), (8, 1, 2, 0)]:
    oh = im2col(np.zeros((1, 1, h, h)), (k, k), (s, s), (p, p)).shape[1] ** 0.5
    print(f"H={h:2d} K={k} S={s} P={p}: OH = ({h} + 2*{p} - {k})//{s} + 1 = {(h + 2*p - k)//s + 1}"
          f"  (im2col gave {int(oh)})")
    assert int(oh) == (h + 2*p - k)//s + 1

# --- 2. The convolution is one matrix product -----------------------------------------------------------
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 7, 6))
conv = nn.Conv2d(3, 4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dtype="float64", rng=0)
y = conv(x)
W, b = conv.weight.data, conv.bias.data

# The textbook definition, with explicit loops (cross-correlation: the kernel is not flipped).
xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
ref = np.zeros_like(y)
for n in range(2):
    for o in range(4):
        for oy in range(y.shape[2]):
            for ox in range(y.shape[3]):
                patch = xpad[n, :, oy * 2:oy * 2 + 3, ox:ox + 2]
                ref[n, o, oy, ox] = (patch * W[o]).sum() + b[o]
print("\nConv2d output", y.shape, "| max |im2col result - loop result| =", f"{np.abs(y - ref).max():.1e}")
assert y.shape == (2, 4, 4, 5) and np.abs(y - ref).max() < 1e-12

# --- 3. col2im is the adjoint of im2col, not its inverse --------------------------------------------------
x = rng.standard_normal((1, 1, 4, 4))
c = rng.standard_normal(im2col(x, (3, 3)).shape)
lhs = (im2col(x, (3, 3)) * c).sum()
rhs = (x * col2im(c, x.shape, (3, 3))).sum()
print("\n<im2col(x), c> =", f"{lhs:.12f}", "  <x, col2im(c)> =", f"{rhs:.12f}")
assert abs(lhs - rhs) < 1e-12
# col2im(im2col(x)) multiplies each pixel by the number of patches it sits in:
counts = col2im(im2col(np.ones((1, 1, 4, 4)), (3, 3)), (1, 1, 4, 4), (3, 3))
print("how many 3x3 patches hold each pixel of a 4x4 image (= col2im(im2col(ones))):\n", counts[0, 0])
assert np.array_equal(counts[0, 0], np.outer([1, 2, 2, 1], [1, 2, 2, 1]))

# --- 3b. The same columns, grouped by image ----------------------------------------------------------------
# im2col_per_image keeps one patch matrix per image; W2 @ cols[n] is then image n's output, already
# in (N, O, OH*OW) order. npse uses it where an image has >= 256 output pixels (docs/03, docs/12).
x = rng.standard_normal((2, 3, 5, 5))
flat = im2col(x, (3, 3), padding=(1, 1))                      # (27, 2*25)
grouped = im2col_per_image(x, (3, 3), padding=(1, 1))         # (2, 27, 25)
print("\nim2col", flat.shape, "| im2col_per_image", grouped.shape,
      "| image 1's columns equal:", np.array_equal(grouped[1], flat[:, 25:50]))
assert grouped.shape == (2, 27, 25) and np.array_equal(grouped[1], flat[:, 25:50])
w = rng.standard_normal((4, 3, 3, 3))
y_batch, _ = nn.conv2d_forward(x, w, None, 1, 1, per_image=False)
y_image, _ = nn.conv2d_forward(x, w, None, 1, 1, per_image=True)
print("one product for the batch vs one per image: max |difference| =",
      f"{np.abs(y_batch - y_image).max():.1e}")
assert np.abs(y_batch - y_image).max() < 1e-12

# --- 3c. Channels last: one patch row per output pixel, and kernel rows ----------------------------------------
# The same (N, C, H, W) array can be stored with the channels of a pixel side by side
# (npse.nn.layout, PyTorch's channels_last). A convolution then makes one patch *row* per output
# pixel, and its output comes out stored the same way (docs/03, docs/12).
x_cl = to_channels_last(x)
print("\nsame values:", np.array_equal(x_cl, x), "| stored channels last:", is_channels_last(x_cl),
      "| strides", x.strides, "->", x_cl.strides)
rows = im2col_channels_last(nhwc(x_cl), (3, 3), padding=(1, 1))   # (2*25, 27): (ky, kx, c) columns
y_rows, cache = nn.conv2d_forward(x_cl, w, None, 1, 1)   # 3 channels, stride 1: by kernel rows (below)
print("patch rows", rows.shape, "| formulation taken:", cache[-1], "| y stored channels last:",
      is_channels_last(y_rows), "| max |difference| =", f"{np.abs(y_rows - y_batch).max():.1e}")
assert np.array_equal(x_cl, x) and is_channels_last(x_cl) and is_channels_last(y_rows)
assert rows.shape == (50, 27) and np.abs(y_rows - y_batch).max() < 1e-12
# With few channels and stride 1, three thinner products (one per kernel row) over patches that
# hold only the 3 column shifts of each input row (a third of the im2col matrix) give the same y:
patches = kernel_row_patches(nhwc(x_cl), 3, (1, 1))              # (2, 7*5, 3*3): padded rows x columns
y_kr = conv2d_by_kernel_rows(patches, w, (5, 5))                   # (2, 5, 5, 4), channels at the end
print("kernel-row patches", patches.shape, "| max |difference| =",
      f"{np.abs(y_kr.transpose(0, 3, 1, 2) - y_batch).max():.1e}")
assert patches.shape == (2, 35, 9) and np.abs(y_kr.transpose(0, 3, 1, 2) - y_batch).max() < 1e-12

# --- 4. Gradient check ----------------------------------------------------------------------------------------
x = rng.standard_normal((2, 3, 6, 5))
conv = nn.Conv2d(3, 2, 3, stride=2, padding=1, dtype="float64", rng=1)
result = gradcheck(conv, x, seed=1)
print("\ngradcheck relative errors:", {k: f"{v:.1e}" for k, v in result.errors.items()})
print("all <= 1e-6:", result.max_error <= 1e-6)
assert result.max_error <= 1e-6 and not result.crossed_kink
