"""Tests of the print-and-photograph transformations against closed forms, torch.rot90 and Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from advlab.physical import (
    PRINT_PHOTO,
    Brightness,
    Compose,
    Contrast,
    GaussianBlur,
    GaussianNoise,
    JPEGCompression,
    Perspective,
    Rotation,
    Scaling,
    affine,
    compose_affine,
    gaussian_blur,
    jpeg_dct,
    jpeg_round_trip,
    parse_transform,
    rotate,
    rotation_matrix,
    scale,
    scaling_matrix,
    translation_matrix,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 1, 12, 12, generator=_gen(3))


ALL = [
    GaussianBlur((0.5, 2.0)),
    GaussianNoise((0.0, 0.3)),
    JPEGCompression((10, 90)),
    Brightness((-0.5, 0.5)),
    Contrast((0.2, 3.0)),
    Rotation((-45, 45)),
    Scaling((0.5, 2.0)),
    Perspective((0.0, 0.25)),
]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_output_stays_in_bounds_and_shape(t, images):
    out = t(images, _gen(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # other bounds: the box is respected too
    shifted = images * 4 - 2
    t2 = type(t)((t.low, t.high), bounds=(-2.0, 2.0))
    out2 = t2(shifted, _gen(1))
    assert float(out2.min()) >= -2.0 and float(out2.max()) <= 2.0


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_same_generator_seed_same_output_and_global_rng_untouched(t, images):
    state = torch.random.get_rng_state()
    a, b = t(images, _gen(5)), t(images, _gen(5))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    "t",
    [
        GaussianBlur(0.0),
        GaussianNoise(0.0),
        Brightness(0.0),
        Contrast(1.0),
        Rotation(0.0),
        Scaling(1.0),
        Perspective(0.0),
    ],
    ids=lambda t: t.name,
)
def test_neutral_strength_is_exact_identity(t, images):
    assert torch.equal(t(images, _gen(0)), images)


def test_tiny_blur_and_geometry_are_close_to_identity(images):
    assert torch.allclose(gaussian_blur(images, 1e-3), images)
    assert torch.allclose(rotate(images, 0.0), images, atol=1e-6)
    assert torch.allclose(scale(images, 1.0), images, atol=1e-6)


def test_rotation_by_right_angles_equals_rot90(images):
    # an independent oracle for the whole affine_grid / grid_sample path (square and non-square images)
    assert torch.allclose(rotate(images, 90.0), torch.rot90(images, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(images, -90.0), torch.rot90(images, -1, dims=(2, 3)), atol=1e-5)
    wide = torch.rand(2, 3, 6, 10, generator=_gen(4))
    assert torch.allclose(rotate(wide, 180.0), torch.rot90(wide, 2, dims=(2, 3)), atol=1e-5)


def test_scale_two_on_constant_blocks_matches_nearest_upsampling():
    # zooming 2x about the centre maps each 2x2 output block onto one input pixel centre region
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 16
    out = scale(x, 2.0)
    # the central 4x4 output shows the central 2x2 input, each pixel interpolated at quarter offsets
    centre = x[0, 0, 1:3, 1:3]
    assert torch.allclose(out[0, 0, 1:3, 1:3].mean(), centre.mean(), atol=1e-6)


def test_brightness_and_contrast_closed_forms():
    x = torch.full((1, 1, 4, 4), 0.4)
    x[0, 0, 0, 0] = 0.8
    assert torch.allclose(Brightness(0.1)(x), (x + 0.1).clamp(0, 1))
    assert torch.allclose(Brightness(-0.5)(x), (x - 0.5).clamp(0, 1))
    m = x.mean()
    assert torch.allclose(Contrast(2.0)(x), (m + 2 * (x - m)).clamp(0, 1))
    assert torch.allclose(Contrast(0.0)(x), torch.full_like(x, float(m)))
    # brightness on the box [-1, 1] is measured in fractions of the range (width 2)
    assert torch.allclose(Brightness(0.1, bounds=(-1.0, 1.0))(x), x + 0.2)


def test_blur_matches_direct_gaussian_convolution():
    g = _gen(7)
    x = torch.rand(1, 1, 15, 15, generator=g)
    sigma = 1.3
    out = gaussian_blur(x, sigma)
    r = 4  # ceil(3 * 1.3)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k2 = torch.outer(k1, k1)
    k2 = k2 / k2.sum()
    # an interior pixel is the plain 2-D weighted sum (no padding involved)
    i, j = 7, 7
    patch = x[0, 0, i - r : i + r + 1, j - r : j + r + 1].double()
    assert abs(float((patch * k2).sum()) - float(out[0, 0, i, j])) < 1e-6
    # blur keeps the mean of a periodic-free constant image and removes variance
    assert float(out.var()) < float(x.var())


def test_noise_has_the_requested_standard_deviation():
    x = torch.full((4, 1, 64, 64), 0.5)
    out = GaussianNoise(0.05)(x, _gen(2))
    assert abs(float((out - x).std()) - 0.05) < 0.002


def _pillow_jpeg(x: torch.Tensor, q: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for im in (x * 255).round().to(torch.uint8).numpy():
        buf = io.BytesIO()
        Image.fromarray(im[0], "L").save(buf, format="JPEG", quality=q)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf))[None])
    return torch.from_numpy(np.stack(out)).float() / 255


def test_jpeg_round_trip_matches_pillow_and_changes_noise_not_flat_images():
    noisy = torch.rand(3, 1, 16, 16, generator=_gen(8))
    flat = torch.full((3, 1, 16, 16), 0.5)
    for q in (20, 75):
        assert torch.equal(jpeg_round_trip(noisy, q), _pillow_jpeg(noisy, q))
    assert float((jpeg_round_trip(noisy, 30) - noisy).abs().mean()) > 0.05
    assert float((jpeg_round_trip(flat, 30) - flat).abs().max()) <= 1.0 / 255 + 1e-6
    # quality 100 is close to lossless
    assert float((jpeg_round_trip(noisy, 100) - noisy).abs().max()) < 4.0 / 255


def test_jpeg_straight_through_gradient_is_identity():
    x = torch.rand(2, 1, 8, 8, generator=_gen(9)).requires_grad_(True)
    y = JPEGCompression(50)(x)
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    assert torch.allclose(g, torch.full_like(g, 3.0))
    assert torch.allclose(y.detach(), jpeg_round_trip(x.detach(), 50), atol=1e-6)


def test_dct_jpeg_approximation_is_close_to_pillow_and_differentiable():
    x = torch.nn.functional.interpolate(torch.rand(4, 1, 6, 6, generator=_gen(10)), size=(24, 24), mode="bilinear")
    for q in (10, 50, 90):
        real = jpeg_round_trip(x, q)
        err = float((jpeg_dct(x, q) - real).abs().mean())
        assert err < 1.0 / 255
        assert err < 0.5 * float((x - real).abs().mean())  # much closer to JPEG than doing nothing
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(jpeg_dct(xg, 50).sum(), xg)
    assert float(g.abs().sum()) > 0


def test_parse_spec_round_trip_and_order():
    t = parse_transform("rotate=-5..5, jpeg=75,blur=1")
    assert t.spec() == "rotate=-5..5,jpeg=75,blur=1"
    assert [type(s) for s in t.transforms] == [Rotation, JPEGCompression, GaussianBlur]
    assert parse_transform("print-photo").spec() == PRINT_PHOTO
    assert len(parse_transform("none")) == 0
    x = torch.rand(2, 1, 8, 8, generator=_gen(0))
    assert torch.equal(Compose([])(x), x)
    # composition equals applying the steps in order with the same generator
    a = t(x, _gen(4))
    g = _gen(4)
    b = x
    for s in t.transforms:
        b = s(b, g)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("blur=-1..1", ["blur sigma", "0..10"]),
        ("jpeg=0..90", ["jpeg quality", "1..100"]),
        ("jpeg=50..101", ["jpeg quality"]),
        ("jpeg=50.5", ["whole"]),
        ("rotate=-60..5", ["rotate degrees", "-45..45"]),
        ("noise=0.2..0.1", ["low <= high"]),
        ("scale=0..1", ["scale factor"]),
        ("perspective=0..0.5", ["perspective distortion"]),
        ("blurr=1", ["did you mean", "blur"]),
        ("blur", ["name=low..high"]),
        ("blur=a..b", ["cannot read"]),
    ],
)
def test_bad_specs_raise_clear_errors(spec, words):
    with pytest.raises(ValueError) as info:
        parse_transform(spec)
    for w in words:
        assert w.lower() in str(info.value).lower()


def test_transforms_refuse_non_images():
    with pytest.raises(ValueError, match="N, C, H, W"):
        GaussianBlur(1.0)(torch.rand(4, 64))
    with pytest.raises(ValueError, match="channels"):
        jpeg_round_trip(torch.rand(1, 2, 8, 8), 50)


def test_affine_maps_compose_like_the_warps_they_describe():
    # rotations add up, a zoom's inverse undoes it, translations add: checked on the matrices themselves
    both = compose_affine(rotation_matrix(30.0), rotation_matrix(60.0))
    assert torch.allclose(both, rotation_matrix(90.0), atol=1e-12)
    assert torch.allclose(compose_affine(scaling_matrix(2.0), scaling_matrix(0.5)), scaling_matrix(1.0), atol=0)
    shift = compose_affine(
        translation_matrix(torch.tensor([[1.0, 2.0]])), translation_matrix(torch.tensor([[3.0, -5.0]]))
    )
    assert torch.equal(shift, translation_matrix(torch.tensor([[4.0, -3.0]])))
    # p -> outer(inner(p)) on a point, by hand: inner doubles the content (halves coordinates), outer shifts
    m = compose_affine(translation_matrix(torch.tensor([[1.0, 0.0]])), scaling_matrix(2.0))
    assert torch.allclose(m[0] @ torch.tensor([4.0, 6.0, 1.0], dtype=torch.float64), torch.tensor([3.0, 3.0]).double())


def test_affine_into_a_larger_canvas_pastes_the_image_and_pads_with_zeros():
    x = torch.rand(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    eye = translation_matrix(torch.zeros(2, 2))
    out = affine(x, eye, size=(8, 10), padding="zeros")
    assert out.shape == (2, 3, 8, 10)
    assert torch.allclose(out[:, :, 2:6, 2:8], x, atol=1e-6)  # centred, pixel for pixel
    out[:, :, 2:6, 2:8] = 0
    assert float(out.abs().max()) <= 1e-6  # zeros around it (up to float rounding of the weights)
    # the same map with the default size and padding is the identity warp
    assert torch.allclose(affine(x, eye), x, atol=1e-6)
    with pytest.raises(ValueError, match="padding"):
        affine(x, eye, padding="reflect")
