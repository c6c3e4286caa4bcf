"""The benchmark protocol in metrics.py: MATLAB's bicubic imresize, Y-channel PSNR/SSIM, the published bicubic numbers."""
import glob
import os
import sys

import numpy as np
import pytest
import skimage.data
from skimage.metrics import structural_similarity

import data
import metrics
from conftest import ROOT, shared_data

rng = np.random.default_rng(0)


# ---------------------------------------------------------------- imresize

def test_imresize_upscale_matches_values_worked_by_hand():
    # x2 along a row of two pixels: centres u = 0.75, 1.25, 1.75, 2.25; with Keys' kernel (a = -0.5) and
    # the mirrored border, out[0] = 1.09375 v0 - 0.09375 v1 and out[1] = 0.796875 v0 + 0.203125 v1.
    out = metrics.imresize(np.array([[0.0, 64.0]]), 2)
    np.testing.assert_allclose(out, [[-6, 13, 51, 70]] * 2, atol=1e-12)
    # uint8 in: rounded and clipped like MATLAB
    np.testing.assert_array_equal(metrics.imresize(np.array([[0, 64]], np.uint8), 2), [[0, 13, 51, 70]] * 2)


def test_imresize_downscale_antialiases_like_matlab_by_hand():
    # /2 of four pixels: the kernel is stretched to width 8 and its weights renormalised:
    # out[0] = 0.546875 v0 + 0.3984375 v1 + 0.1015625 v2 - 0.046875 v3, out[1] the mirror image.
    out = metrics.imresize(np.array([[0.0, 64.0, 128.0, 192.0]]), 0.5)
    np.testing.assert_allclose(out, [[29.5, 162.5]], atol=1e-12)


@pytest.mark.parametrize("shape, scale, expected", [
    ((5, 7), 1 / 4, (2, 2)), ((7, 5, 3), 1 / 3, (3, 2, 3)), ((5, 7, 3), 4, (20, 28, 3)), ((9, 1), 1 / 2, (5, 1))])
def test_imresize_output_size_is_matlabs_ceil(shape, scale, expected):
    assert metrics.imresize(np.zeros(shape), scale).shape == expected


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 2, 4])
def test_imresize_keeps_constant_images_constant(scale):
    image = np.full((13, 9, 3), 77, np.uint8)
    out = metrics.imresize(image, scale)
    assert out.dtype == np.uint8 and np.all(out == 77)
    np.testing.assert_allclose(metrics.imresize(image.astype(float), scale), 77.0)


def test_imresize_is_close_to_the_x4_pairs_lr_images():
    """The pairs' LR come from another project's MATLAB-like resize: most pixels, not all, agree."""
    same = total = 0
    for hr_path in sorted(glob.glob(os.path.join(shared_data("x4_pairs"), "*", "*_HR.png"))):
        hr = data.load_image(hr_path)
        lr = data.load_image(hr_path.replace("_HR.png", "_LR.png"))
        ours = metrics.imresize(hr, 1 / 4)
        assert ours.shape == lr.shape
        same, total = same + np.sum(ours == lr), total + lr.size
    assert total and same / total > 0.9


# ---------------------------------------------------------------- Y, PSNR, SSIM

def test_y_channel_is_bt601_on_0_255():
    assert metrics.rgb_to_y([0, 0, 0]) == pytest.approx(16)
    assert metrics.rgb_to_y([255, 255, 255]) == pytest.approx(235)
    assert metrics.rgb_to_y([255, 0, 0]) == pytest.approx(16 + 65.481)


def test_psnr_and_ssim_of_identical_images():
    image = rng.uniform(16, 235, (40, 30))
    assert metrics.psnr(image, image) == float("inf")
    assert metrics.ssim(image, image) == pytest.approx(1.0)


def test_psnr_of_known_errors():
    image = rng.uniform(50, 200, (64, 64))
    assert metrics.psnr(image, image + 5) == pytest.approx(10 * np.log10(255 ** 2 / 25))
    noisy = image + rng.normal(0, 10, image.shape)
    assert metrics.psnr(image, noisy) == pytest.approx(10 * np.log10(255 ** 2 / 100), abs=0.15)


@pytest.mark.parametrize("sigma", [2, 10, 30])
def test_ssim_matches_wang_et_al_as_scikit_image_implements_it(sigma):
    image = rng.uniform(0, 255, (48, 40))
    noisy = np.clip(image + rng.normal(0, sigma, image.shape), 0, 255)
    reference = structural_similarity(image, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255)
    assert metrics.ssim(image, noisy) == pytest.approx(reference, abs=1e-6)
    assert metrics.ssim(image, noisy) < 1


def test_sr_metrics_shave_the_border():
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:4] = 0  # damage only inside the shaved border
    assert metrics.sr_metrics(sr, hr, 4) == (float("inf"), pytest.approx(1.0))
    sr[4] = 0
    assert metrics.sr_metrics(sr, hr, 4)[0] < 40


def set_scores(folder):
    scores = []
    for path in data.list_images("folder", folder):
        hr, lr = metrics.bicubic_pair(data.load_image(path))
        scores.append(metrics.sr_metrics(metrics.imresize(lr, 4), hr))
    return np.mean(scores, axis=0)


def test_set5_bicubic_reproduces_the_published_numbers():
    """SRGAN paper Table 2: Set5 x4 bicubic 28.43 dB; SSIM 0.811 with Wang et al.'s SSIM (the paper's 0.8211 is another implementation)."""
    psnr, ssim = set_scores(shared_data("Set5", "HR"))
    assert psnr == pytest.approx(28.43, abs=0.02)
    assert ssim == pytest.approx(0.811, abs=0.003)


def test_grayscale_test_images_are_evaluated_on_their_grey_values():
    bridge = data.load_image(shared_data("Set14", "HR", "bridge.png"))  # single-channel file
    assert bridge.shape[2] == 3
    np.testing.assert_allclose(metrics.rgb_to_y(bridge), 16 + 219 * bridge[:, :, 0].astype(float) / 255)


def test_grid_energy_measures_a_pattern_repeating_every_scale_pixels():
    photo = skimage.data.astronaut()
    hr, lr = metrics.bicubic_pair(photo)
    plain = metrics.grid_energy(hr)
    assert 0.05 < plain < 0.5 and metrics.grid_energy(metrics.imresize(lr, 4)) < 0.1
    checker = np.indices(hr.shape[:2]).sum(axis=0) % 2 * 4.0 - 2.0  # +-2 levels, every other pixel
    gridded = np.clip(hr + checker[..., None], 0, 255).astype(np.uint8)
    assert metrics.grid_energy(gridded) > plain + 1.5
    shifted = np.clip(hr + np.roll(checker, 1, axis=1)[..., None], 0, 255).astype(np.uint8)
    assert metrics.grid_energy(shifted) == pytest.approx(metrics.grid_energy(gridded), abs=0.1)  # any phase


# ---------------------------------------------------------------- docs/detail_spectrum.py's bands

def test_a_checkerboard_is_in_the_corner_band_fine_stripes_in_the_ring_and_colour_stripes_in_the_chroma():
    sys.path.insert(0, os.path.join(ROOT, "docs"))
    import detail_spectrum  # docs/, the script of docs/gan-phase.md's rounds 17 to 19
    y, x = np.mgrid[:64, :64]
    grey = lambda luma: np.repeat(np.clip(luma, 0, 255)[..., None], 3, axis=2).astype(np.uint8)
    checkerboard = grey(128 + 40 * (-1.0) ** (x + y))
    stripes = grey(128 + 40 * np.cos(2 * np.pi * 0.3 * x))  # 0.3 cycles a pixel: fine texture
    ramp = grey(2 * x + y)  # smooth
    wave = np.cos(2 * np.pi * 0.3 * x)  # red against green of the same luma: colour speckle, no texture
    colour_stripes = np.round(np.stack([128 + 40 * wave, 128 - 40 * 65.481 / 128.553 * wave, np.full_like(wave, 128)], -1)).astype(np.uint8)
    corner, ring, high, chroma = detail_spectrum.band_powers(checkerboard)
    assert ring == pytest.approx(0, abs=1e-6 * corner) and corner > 0 and high >= corner
    assert chroma == pytest.approx(0, abs=1e-6 * corner)
    corner, ring, high, chroma = detail_spectrum.band_powers(stripes)
    assert corner == pytest.approx(0, abs=1e-3 * ring) and ring > 0 and high == pytest.approx(ring, rel=0.01)
    assert chroma == pytest.approx(0, abs=1e-6 * ring)
    corner, ring, high, chroma = detail_spectrum.band_powers(colour_stripes)
    assert ring < 1e-3 * chroma and corner < 1e-3 * chroma
    # the chroma is measured against the HR's luma detail, so that a grey HR photo gives a finite ratio
    grey_hr = detail_spectrum.band_powers(grey(128 + 30 * (-1.0) ** (x + y) + 30 * np.cos(2 * np.pi * 0.3 * x)))
    assert detail_spectrum.ratios(detail_spectrum.band_powers(colour_stripes), grey_hr)[2] == pytest.approx(chroma / grey_hr[2])
    corner, ring, high, chroma = detail_spectrum.band_powers(ramp)
    luma = metrics.rgb_to_y(ramp.astype(float))
    assert corner + ring < 0.05 * np.sum((luma - luma.mean()) ** 2) * luma.size  # Parseval: the whole spectrum's power
