"""Random image transformations that simulate printing and photographing an image, composable and torch-only.

Each transformation draws its strength per example from a range (``torch.Generator``, never the global RNG),
is applied to a batch ``(N, C, H, W)`` of raw inputs, and returns a batch inside the input box. All of them
are differentiable with respect to the input except JPEG, whose real Pillow round trip is passed through
with a straight-through (BPDA) gradient. Kurakin et al. 2016 (arXiv:1607.02533) printed adversarial images
and photographed them with a phone; the pipeline here (perspective, rotation, scale, brightness, contrast,
blur, noise, JPEG) stands in for that and for the "artificial image transformations" of their section 4.

Examples:
    >>> t = parse_transform("blur=0.5..1.5,noise=0..0.05,jpeg=50..90,rotate=-5..5")
    >>> x_photo = t(x, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from advlab import validation
from advlab.registry import Registry

TRANSFORMS: Registry[type[Transform]] = Registry("transform")
"""Transformation classes by their spec-string name (``"blur"``, ``"noise"``, ``"jpeg"``...)."""

BLUR_TRUNCATE = 3.0
"""The Gaussian kernel is cut at ``3 sigma`` (radius ``ceil(3 sigma)`` pixels)."""
_MIN_SIGMA = 1e-6  # below this the blur kernel is exactly a delta (exp(-1 / 2e-12) underflows to 0)

PRINT_PHOTO = (
    "perspective=0..0.05,rotate=-5..5,scale=0.9..1.1,brightness=-0.1..0.1,contrast=0.8..1.2,"
    "blur=0.5..1.5,noise=0..0.05,jpeg=50..90"
)
"""The default simulated print-and-photograph pipeline: camera geometry, lighting, optics, sensor, compression."""


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4 or not torch.is_floating_point(x):
        raise ValueError(
            f"{name}: image transformations expect a floating batch of images (N, C, H, W), got "
            f"shape {tuple(x.shape)} and dtype {x.dtype}"
        )


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(low, high) in float64 on the generator's device (one draw per example)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device)
    return low + (high - low) * u


def _keep_identity(x: torch.Tensor, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``x`` (exactly) for the examples whose strength is neutral, ``out`` for the others."""
    if not bool(identity.any()):
        return out
    return torch.where(identity.to(x.device).reshape(-1, 1, 1, 1), x, out)


class Transform:
    """A random transformation: strengths drawn per example, applied to a batch, output inside ``bounds``.

    Subclasses set :attr:`name`, :attr:`strength`, :attr:`limits` and implement :meth:`sample` and :meth:`apply`.

    Args:
        value: the strength, a number (fixed) or a range ``(low, high)`` sampled uniformly per example.
        bounds: the input box the output is kept in.
    """

    name: ClassVar[str] = ""
    strength: ClassVar[str] = "strength"
    limits: ClassVar[tuple[float, float]] = (0.0, 1.0)
    neutral: ClassVar[float] = 0.0
    integer: ClassVar[bool] = False
    unit: ClassVar[str] = ""

    def __init__(self, value: float | Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        lo, hi = self.limits
        self.low, self.high = validation.check_strength_range(
            f"{self.name} {self.strength}",
            value,
            minimum=lo,
            maximum=hi,
            integer=self.integer,
            remedy=f"The allowed {self.strength} range of '{self.name}' is {lo:g}..{hi:g}{self.unit}.",
        )
        validation.check_threat_args("linf", 0.0, bounds)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        if not (math.isfinite(self.bounds[0]) and math.isfinite(self.bounds[1])):
            raise ValueError(f"bounds: the transformations of images need a finite pixel range, got {self.bounds}")

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw the parameters of ``n`` transformations (on the generator's device)."""
        return {"value": _uniform(n, self.low, self.high, generator)}

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the transformations with the given parameters (one per example)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform ``x`` with strengths drawn from ``generator`` (a fresh seed-0 generator when ``None``)."""
        _check_images(x)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        params = {k: v.to(x.device) for k, v in self.sample(x.shape[0], generator).items()}
        return self.apply(x, params)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.bounds[0], self.bounds[1])

    def spec(self) -> str:
        """This transformation as a spec-string item, e.g. ``blur=0.5..1.5``."""
        fmt = (lambda v: f"{int(v)}") if self.integer else (lambda v: f"{v:g}")
        rng = fmt(self.low) if self.low == self.high else f"{fmt(self.low)}..{fmt(self.high)}"
        return f"{self.name}={rng}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.low:g}..{self.high:g})"


# ---------------------------------------------------------------------- photometric
def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """Blur each image with a Gaussian of standard deviation ``sigma[i]`` pixels (separable, edges replicated).

    ``sigma = 0`` returns the image exactly (the kernel is a delta). Output values are convex combinations of
    input values, so the box is preserved.
    """
    n, c, h, w = x.shape
    sigma_t = torch.as_tensor(sigma, dtype=torch.float64).expand(n).to(x.device)
    smax = float(sigma_t.max())
    if smax < _MIN_SIGMA:
        return x
    radius = max(1, math.ceil(BLUR_TRUNCATE * smax))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    s = sigma_t.clamp_min(_MIN_SIGMA)[:, None]
    k = torch.exp(-(t[None] ** 2) / (2 * s**2))
    k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(c, dim=0)  # (n * c, 2r + 1)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


@TRANSFORMS.register("blur")
class GaussianBlur(Transform):
    """Gaussian blur with ``sigma`` (pixels) drawn per example from a range in ``[0, 10]``.

    Examples:
        >>> GaussianBlur((0.5, 1.5))(x, generator)
    """

    name = "blur"
    strength = "sigma"
    limits = (0.0, 10.0)
    unit = " pixels"

    def apply(self, x, params):
        sigma = params["value"]
        return _keep_identity(x, self.clip(gaussian_blur(x, sigma)), sigma == 0)


@TRANSFORMS.register("noise")
class GaussianNoise(Transform):
    """Additive Gaussian noise with standard deviation drawn per example, in units of the box width, then clipped.

    Examples:
        >>> GaussianNoise((0.0, 0.05))(x, generator)
    """

    name = "noise"
    strength = "std"
    limits = (0.0, 1.0)
    unit = " (fractions of the input range)"

    def sample(self, n, generator):
        raise NotImplementedError  # the noise needs the image shape: see __call__

    def __call__(self, x, generator=None):
        _check_images(x)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        std = _uniform(x.shape[0], self.low, self.high, generator)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
        return self.apply(x, {"value": std.to(x.device), "noise": noise.to(x.device)})

    def apply(self, x, params):
        width = self.bounds[1] - self.bounds[0]
        std = params["value"].to(x.dtype).reshape(-1, 1, 1, 1) * width
        return _keep_identity(x, self.clip(x + std * params["noise"]), params["value"] == 0)


@TRANSFORMS.register("brightness")
class Brightness(Transform):
    """Add ``delta * (high - low)`` to every pixel (``delta`` drawn per example from ``[-1, 1]``), then clip.

    Examples:
        >>> Brightness((-0.1, 0.1))(x, generator)
    """

    name = "brightness"
    strength = "delta"
    limits = (-1.0, 1.0)
    unit = " (fractions of the input range)"

    def apply(self, x, params):
        width = self.bounds[1] - self.bounds[0]
        delta = params["value"].to(x.dtype).reshape(-1, 1, 1, 1) * width
        return _keep_identity(x, self.clip(x + delta), params["value"] == 0)


@TRANSFORMS.register("contrast")
class Contrast(Transform):
    """Scale each image's deviations from its own mean by ``factor`` (drawn per example from ``[0, 5]``), then clip.

    ``x' = clip(mean(x) + factor * (x - mean(x)))`` with the mean over all pixels and channels of the image
    (factor 1 is the identity, 0 a flat grey image).

    Examples:
        >>> Contrast((0.8, 1.2))(x, generator)
    """

    name = "contrast"
    strength = "factor"
    limits = (0.0, 5.0)
    neutral = 1.0

    def apply(self, x, params):
        f = params["value"].to(x.dtype).reshape(-1, 1, 1, 1)
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return _keep_identity(x, self.clip(m + f * (x - m)), params["value"] == 1)


def jpeg_round_trip(
    x: torch.Tensor, quality: torch.Tensor | int, bounds: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """Encode each image as an 8-bit JPEG with Pillow at ``quality[i]`` and decode it again.

    Images are mapped from ``bounds`` to 0..255, rounded to integers (as a printed/photographed image is),
    compressed with Pillow's encoder (baseline JPEG, default chroma subsampling for colour images), decoded,
    and mapped back. One channel is encoded as greyscale (``"L"``), three as RGB.

    The round trip is not differentiable; when ``x`` requires gradients the result is
    ``x + (jpeg(x) - x).detach()``: the forward value is the real JPEG and the backward pass treats it as
    the identity (straight-through / BPDA, Athalye, Carlini & Wagner 2018, arXiv:1802.00420).

    Raises:
        ValueError: images with a channel count other than 1 or 3, or quality outside 1..100.
    """
    from PIL import Image

    n, c, _h, _w = x.shape
    if c not in (1, 3):
        raise ValueError(f"x: JPEG needs 1 (greyscale) or 3 (RGB) channels, got {c}")
    q = torch.as_tensor(quality).expand(n).tolist()
    for v in q:
        if not 1 <= int(v) <= 100:
            raise ValueError(f"quality: expected JPEG qualities in 1..100, got {v}")
    lo, hi = bounds
    arr = ((x.detach() - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(n):
        img = Image.fromarray(arr[i, 0], "L") if c == 1 else Image.fromarray(arr[i].transpose(1, 2, 0), "RGB")
        buf = _io.BytesIO()
        img.save(buf, format="JPEG", quality=int(q[i]))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if c == 1 else "RGB"))
        out[i] = dec[None] if c == 1 else dec.transpose(2, 0, 1)
    y = torch.from_numpy(out).to(device=x.device, dtype=x.dtype) / 255.0 * (hi - lo) + lo
    if x.requires_grad:
        return x + (y - x).detach()
    return y


JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
"""The JPEG standard's example luminance quantisation table (ITU-T T.81, Annex K.1), used by libjpeg/Pillow."""
JPEG_CHROMA = tuple(
    tuple(v)
    for v in (
        (17, 18, 24, 47, 99, 99, 99, 99),
        (18, 21, 26, 66, 99, 99, 99, 99),
        (24, 26, 56, 99, 99, 99, 99, 99),
        (47, 66, 99, 99, 99, 99, 99, 99),
    )
    + ((99,) * 8,) * 4
)
"""The standard's example chrominance table (Annex K.1)."""
_BLOCK = 8


def jpeg_quant_tables(quality: torch.Tensor) -> torch.Tensor:
    """libjpeg's quality scaling of the standard tables: ``(N, 2, 8, 8)`` (luminance, chrominance) per quality."""
    q = quality.to(torch.float64).clamp(1, 100)
    s = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None, None]
    base = torch.tensor([JPEG_LUMA, JPEG_CHROMA], dtype=torch.float64, device=q.device)[None]
    return torch.floor((base * s + 50.0) / 100.0).clamp(1, 255)


def _dct_matrix(device: torch.device) -> torch.Tensor:
    k = torch.arange(_BLOCK, dtype=torch.float64, device=device)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * _BLOCK)) * math.sqrt(2.0 / _BLOCK)
    m[0] /= math.sqrt(2.0)
    return m  # orthonormal DCT-II: coefficients = M @ block @ M.T


def jpeg_dct(x: torch.Tensor, quality: torch.Tensor | int, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Differentiable approximation of a JPEG round trip: 8x8 block DCT, quantisation, inverse DCT, in torch.

    Pixels are mapped to 0..255 (colour images to YCbCr, JPEG's colour space), split into 8x8 blocks (edges
    replicated to a multiple of 8), transformed with the orthonormal DCT, divided by libjpeg's quality-scaled
    standard tables, rounded, multiplied back and inverted. The rounding is straight-through (exact forward,
    identity backward), so gradients flow. It differs from a real encoder in leaving out chroma
    subsampling and the integer arithmetic of the encoder's DCT and of the decoded planes; on greyscale
    images it is within about one grey level of Pillow on average (see the tests).
    """
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"x: JPEG needs 1 (greyscale) or 3 (RGB) channels, got {c}")
    lo, hi = bounds
    v = (x - lo) / (hi - lo) * 255.0
    v = v + (torch.round(v) - v).detach()  # 8-bit input, straight-through
    if c == 3:
        r, g, b = v[:, 0], v[:, 1], v[:, 2]
        v = torch.stack(
            [
                0.299 * r + 0.587 * g + 0.114 * b,
                -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0,
                0.5 * r - 0.418688 * g - 0.081312 * b + 128.0,
            ],
            1,
        )
    ph, pw = (-h) % _BLOCK, (-w) % _BLOCK
    v = F.pad(v - 128.0, (0, pw, 0, ph), mode="replicate") if (ph or pw) else v - 128.0
    hb, wb = v.shape[2] // _BLOCK, v.shape[3] // _BLOCK
    blocks = v.reshape(n, c, hb, _BLOCK, wb, _BLOCK).permute(0, 1, 2, 4, 3, 5).to(torch.float64)
    m = _dct_matrix(x.device)
    coef = m @ blocks @ m.T
    tables = jpeg_quant_tables(torch.as_tensor(quality, device=x.device).expand(n))
    table = tables[:, [0] + [1] * (c - 1)][:, :, None, None]  # (n, c, 1, 1, 8, 8)
    scaled = coef / table
    scaled = scaled + (torch.round(scaled) - scaled).detach()
    blocks = m.T @ (scaled * table) @ m
    v = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hb * _BLOCK, wb * _BLOCK)[:, :, :h, :w] + 128.0
    if c == 3:
        yy, cb, cr = v[:, 0], v[:, 1] - 128.0, v[:, 2] - 128.0
        v = torch.stack([yy + 1.402 * cr, yy - 0.344136 * cb - 0.714136 * cr, yy + 1.772 * cb], 1)
    return (v.clamp(0, 255) / 255.0 * (hi - lo) + lo).to(x.dtype)


JPEG_METHODS = ("pillow", "dct")
"""``"pillow"``: the real encoder with a straight-through gradient; ``"dct"``: the torch approximation."""


@TRANSFORMS.register("jpeg")
class JPEGCompression(Transform):
    """A real JPEG round trip (Pillow) at a quality drawn per example from whole numbers in ``[1, 100]``.

    With ``method="pillow"`` (the default, for evaluation) gradients pass straight through the real encoder
    (BPDA, identity backward; see :func:`jpeg_round_trip`); with ``method="dct"`` the batched torch
    approximation :func:`jpeg_dct` is used (fast, differentiable through the DCT, used by EOT). Unlike the
    other transformations, quality 100 is not the identity: pixels are rounded to 8 bits and the DCT
    coefficients quantised with step 1.

    Examples:
        >>> JPEGCompression((50, 90))(x, generator)
    """

    name = "jpeg"
    strength = "quality"
    limits = (1.0, 100.0)
    integer = True

    def __init__(
        self, value: float | Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0), method: str = "pillow"
    ) -> None:
        super().__init__(value, bounds=bounds)
        validation.check_choice("method", method, JPEG_METHODS, "Use 'pillow' to evaluate, 'dct' for fast gradients.")
        self.method = method

    def sample(self, n, generator):
        q = torch.randint(int(self.low), int(self.high) + 1, (n,), generator=generator, device=generator.device)
        return {"value": q}

    def apply(self, x, params):
        if self.method == "dct":
            return self.clip(jpeg_dct(x, params["value"], self.bounds))
        return self.clip(jpeg_round_trip(x, params["value"].cpu(), self.bounds))


# ---------------------------------------------------------------------- geometric (grid_sample based)
def _sample_grid(x: torch.Tensor, grid: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinear resampling at ``grid`` (normalised coordinates, ``align_corners=False``), edges replicated or zeros."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=False)


GRID_PADDING = ("border", "zeros")
"""What :func:`affine` samples outside the input: the replicated edge, or zeros (nothing, for pasting)."""


def affine(
    x: torch.Tensor,
    matrix: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    padding: str = "border",
) -> torch.Tensor:
    """Resample each image with the affine map ``matrix[i]`` (N, 2, 3) from output to input pixel coordinates.

    Coordinates are pixel units relative to the centre of each image (the output's for the output pixels, the
    input's for the input pixels; x to the right, y down); the map is converted to PyTorch's normalised
    coordinates so that rotations are true rotations on non-square images. Bilinear interpolation.

    Args:
        x: images ``(N, C, H, W)``.
        matrix: ``(N, 2, 3)`` maps ``p_in = A p_out + t`` (build them with :func:`rotation_matrix`,
            :func:`scaling_matrix`, :func:`translation_matrix` and :func:`compose_affine`).
        size: the output's ``(height, width)``; default the input's.
        padding: ``"border"`` (edges replicated: the output stays inside the range of the input) or ``"zeros"``.

    Returns:
        The resampled images ``(N, C, *size)``.
    """
    validation.check_choice("padding", padding, GRID_PADDING)
    n, _, h, w = x.shape
    out_h, out_w = (h, w) if size is None else size
    m = matrix.to(torch.float64)
    d_in = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64, device=m.device)
    d_out = torch.tensor([out_w / 2.0, out_h / 2.0], dtype=torch.float64, device=m.device)
    theta = torch.empty_like(m)
    theta[:, :, :2] = m[:, :, :2] * d_out[None, None, :] / d_in[None, :, None]  # D_in^-1 A D_out
    theta[:, :, 2] = m[:, :, 2] / d_in[None, :]
    grid = F.affine_grid(theta.to(x.device), [n, 1, out_h, out_w], align_corners=False)
    return _sample_grid(x, grid, padding)


def rotation_matrix(degrees: torch.Tensor | float, n: int = 1) -> torch.Tensor:
    """``(N, 2, 3)`` output-to-input maps of counter-clockwise rotations (as displayed) by ``degrees[i]``.

    ``degrees`` is one angle or one per example (``n`` of them).
    """
    a = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64).expand(n))
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    # output pixel p' -> input pixel p = R^-1 p'; with y pointing down, a visual counter-clockwise turn is
    # a clockwise one in (x, y-down) coordinates
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def scaling_matrix(factor: torch.Tensor | float, n: int = 1) -> torch.Tensor:
    """``(N, 2, 3)`` output-to-input maps of zooms by ``factor[i]`` (> 1 enlarges the content)."""
    f = torch.as_tensor(factor, dtype=torch.float64).expand(n)
    zero = torch.zeros_like(f)
    inv = 1.0 / f
    return torch.stack([torch.stack([inv, zero, zero], 1), torch.stack([zero, inv, zero], 1)], 1)


def translation_matrix(offset: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` maps ``p -> p + offset[i]`` (``offset`` is ``(N, 2)``, pixels ``(x, y)``)."""
    t = torch.as_tensor(offset, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64, device=t.device).expand(t.shape[0], 2, 2)
    return torch.cat([eye, t[:, :, None]], 2)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The ``(N, 2, 3)`` maps ``p -> outer(inner(p))``."""
    linear = outer[:, :, :2] @ inner[:, :, :2]
    return torch.cat([linear, outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]], 2)


def rotate(x: torch.Tensor, degrees: torch.Tensor | float) -> torch.Tensor:
    """Rotate each image counter-clockwise (as displayed) by ``degrees[i]`` about its centre; any angle.

    ``rotate(x, 90)`` equals ``torch.rot90(x, 1, dims=(2, 3))`` on square images up to float rounding.
    """
    return affine(x, rotation_matrix(degrees, x.shape[0]))


def scale(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Zoom each image by ``factor[i]`` about its centre (> 1 enlarges the content, < 1 shrinks it)."""
    return affine(x, scaling_matrix(factor, x.shape[0]))


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3x3 homographies (N, 3, 3) mapping the four points ``src[i]`` (N, 4, 2) onto ``dst[i]``."""
    n = src.shape[0]
    rows = []
    rhs = []
    for k in range(4):
        x, y = src[:, k, 0], src[:, k, 1]
        u, v = dst[:, k, 0], dst[:, k, 1]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        rows.append(torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], 1))
        rows.append(torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], 1))
        rhs += [u, v]
    a = torch.stack(rows, 1)
    b = torch.stack(rhs, 1)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype, device=h.device)], 1).reshape(n, 3, 3)


def perspective(x: torch.Tensor, corner_offsets: torch.Tensor) -> torch.Tensor:
    """Warp each image by the homography that moves its corners by ``corner_offsets[i]`` (N, 4, 2).

    Offsets are fractions of the image size (x, y) applied to the corners top-left, top-right,
    bottom-right, bottom-left of the *sampled* region: output corner ``k`` shows the input at corner ``k``
    plus its offset, as a camera looking at the print from slightly off-axis would.
    """
    n, _, h, w = x.shape
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    corners = corners.to(corner_offsets.device).expand(n, 4, 2)
    hom = _homography(corners, corners + 2.0 * corner_offsets.to(torch.float64))
    base = F.affine_grid(
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64).expand(n, 2, 3).to(hom.device),
        [n, 1, h, w],
        align_corners=False,
    )  # (n, h, w, 2)
    homog = torch.cat([base, torch.ones_like(base[..., :1])], -1) @ hom.transpose(1, 2)[:, None]
    grid = homog[..., :2] / homog[..., 2:]
    return _sample_grid(x, grid.to(x.device))


@TRANSFORMS.register("rotate")
class Rotation(Transform):
    """Rotation about the image centre by an angle (degrees, counter-clockwise) drawn per example from ``[-45, 45]``.

    Examples:
        >>> Rotation((-5, 5))(x, generator)
    """

    name = "rotate"
    strength = "degrees"
    limits = (-45.0, 45.0)
    unit = " degrees"

    def apply(self, x, params):
        deg = params["value"]
        return _keep_identity(x, self.clip(rotate(x, deg)), deg == 0)


@TRANSFORMS.register("scale")
class Scaling(Transform):
    """Zoom about the image centre by a factor drawn per example from ``[0.5, 2]`` (edges replicated).

    Examples:
        >>> Scaling((0.9, 1.1))(x, generator)
    """

    name = "scale"
    strength = "factor"
    limits = (0.5, 2.0)
    neutral = 1.0

    def apply(self, x, params):
        f = params["value"]
        return _keep_identity(x, self.clip(scale(x, f)), f == 1)


@TRANSFORMS.register("perspective")
class Perspective(Transform):
    """Random perspective: each corner moves by up to ``distortion`` (fraction of the image size, ``[0, 0.25]``).

    The distortion is drawn per example from the range, then each corner's (x, y) offset uniformly from
    ``[-distortion, distortion]``.

    Examples:
        >>> Perspective((0.0, 0.05))(x, generator)
    """

    name = "perspective"
    strength = "distortion"
    limits = (0.0, 0.25)
    unit = " (fraction of the image size)"

    def sample(self, n, generator):
        d = _uniform(n, self.low, self.high, generator)
        u = torch.rand((n, 4, 2), generator=generator, dtype=torch.float64, device=generator.device) * 2 - 1
        return {"value": d, "offsets": u * d[:, None, None]}

    def apply(self, x, params):
        d = params["value"]
        return _keep_identity(x, self.clip(perspective(x, params["offsets"])), d == 0)


# ---------------------------------------------------------------------- composition and spec strings
class Compose(Transform):
    """Apply transformations in order, each drawing its own per-example strengths from the same generator.

    ``Compose([])`` is the identity.

    Examples:
        >>> t = Compose([Rotation((-5, 5)), GaussianBlur((0.5, 1.5)), JPEGCompression((50, 90))])
        >>> x_t = t(x, torch.Generator().manual_seed(0))
    """

    name = "compose"

    def __init__(self, transforms: Sequence[Transform]) -> None:
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"transforms[{i}]: expected an advlab.physical Transform, got {type(t).__name__}")
        self.transforms = transforms
        self.bounds = transforms[0].bounds if transforms else (0.0, 1.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(x)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        for t in self.transforms:
            x = t(x, generator)
        return x

    def spec(self) -> str:
        return ",".join(t.spec() for t in self.transforms) or "none"

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"

    def __len__(self) -> int:
        return len(self.transforms)


def _parse_number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise ValueError(f"transform: cannot read {text!r} in {where!r} as a number (example: blur=0.5..1.5)") from exc


def parse_transform(spec: str | Transform, bounds: tuple[float, float] = (0.0, 1.0)) -> Compose:
    """Build a :class:`Compose` from a spec string like ``"blur=0.5..1.5,noise=0..0.05,jpeg=50..90"``.

    Items are ``name=low..high`` (a range) or ``name=value`` (fixed), applied left to right. Names:
    ``blur`` (sigma, pixels), ``noise`` (std), ``jpeg`` (quality), ``brightness`` (delta), ``contrast``
    (factor), ``rotate`` (degrees), ``scale`` (factor), ``perspective`` (corner distortion). ``"none"`` or
    ``""`` is the identity, and ``"print-photo"`` is :data:`PRINT_PHOTO`. A :class:`Transform` passes through.

    Raises:
        ValueError: unknown names (with a did-you-mean hint), unreadable numbers, strengths out of range.

    Examples:
        >>> parse_transform("rotate=-5..5,jpeg=75").spec()
        'rotate=-5..5,jpeg=75'
    """
    if isinstance(spec, Compose):
        return spec
    if isinstance(spec, Transform):
        return Compose([spec])
    if not isinstance(spec, str):
        raise TypeError(
            f"transform: expected a spec string such as 'blur=0.5..1.5,jpeg=50..90', got {type(spec).__name__}"
        )
    text = spec.strip()
    if text.lower() in ("", "none", "identity"):
        return Compose([])
    if text.lower() == "print-photo":
        text = PRINT_PHOTO
    items = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"transform: expected name=low..high or name=value, got {item!r} (example: blur=0.5..1.5)")
        name, value = (s.strip() for s in item.split("=", 1))
        cls = TRANSFORMS.get(name)
        if ".." in value:
            lo, hi = value.split("..", 1)
            strength: Any = (_parse_number(lo, item), _parse_number(hi, item))
        else:
            strength = _parse_number(value, item)
        items.append(cls(strength, bounds=bounds))
    return Compose(items)


def with_jpeg_method(transform: Transform, method: str) -> Transform:
    """A copy of ``transform`` whose JPEG steps use ``method`` (``"pillow"`` or ``"dct"``); other steps are shared."""
    validation.check_choice("method", method, JPEG_METHODS)
    if isinstance(transform, Compose):
        return Compose([with_jpeg_method(t, method) for t in transform.transforms])
    if isinstance(transform, JPEGCompression) and transform.method != method:
        return JPEGCompression((transform.low, transform.high), bounds=transform.bounds, method=method)
    return transform
