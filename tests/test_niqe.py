"""NIQE (niqe.py) against the authors' MATLAB code, and the properties that make it a quality measure."""
import os

import numpy as np
import pytest
from scipy.ndimage import correlate, gaussian_filter
from scipy.stats import gennorm

import data
import metrics
import niqe
from conftest import shared_data

rng = np.random.default_rng(0)


def test_matches_the_authors_matlab_code_on_baboon():
    """../shared/data/niqe/README.md: Set14 baboon, first 492 columns, Y channel, no border crop -> 5.72957338 in MATLAB."""
    baboon = data.load_image(shared_data("Set14", "HR", "baboon.png"))[:, :492]
    assert niqe.sr_niqe(baboon, shave=0) == pytest.approx(5.72957338, abs=1e-3)


def test_the_project_copy_of_the_pristine_model_is_the_authors():
    """weights/niqe_pris_params.npz is the file of ../shared/data/niqe, byte for byte."""
    with open(shared_data("niqe", "niqe_pris_params.npz"), "rb") as f, open(niqe.PARAMS, "rb") as g:
        assert f.read() == g.read()


@pytest.mark.parametrize("alpha, left, right", [(2.0, 1.0, 1.0), (0.8, 0.5, 0.5), (1.4, 0.3, 0.9)])
def test_aggd_fit_recovers_the_shape_and_scales_of_samples(alpha, left, right):
    """An AGGD: |x| ~ GGD(alpha) with scale `left` below 0 and `right` above, P(x < 0) = left / (left + right)."""
    magnitude = np.abs(gennorm.rvs(alpha, size=400_000, random_state=rng))
    negative = rng.random(magnitude.size) < left / (left + right)
    x = np.where(negative, -left * magnitude, right * magnitude)
    fitted = niqe.aggd_fit(x)
    assert fitted == pytest.approx((alpha, left, right), rel=0.03)


def test_aggd_fit_is_nan_without_values_on_both_sides():
    assert np.isnan(niqe.aggd_fit(np.abs(rng.normal(size=100)))).all()


def test_mscn_is_the_textbook_formula_and_exactly_zero_where_flat():
    image = np.round(rng.uniform(0, 255, (40, 50)))
    image[10:30, 10:30] = 77  # a flat square: its inner pixels have a constant 7x7 neighbourhood
    window = niqe.pristine_model()[2]
    mu = correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    coefficients = niqe.mscn(image, window)
    np.testing.assert_allclose(coefficients, (image - mu) / (sigma + 1), atol=1e-9)
    assert np.all(coefficients[13:27, 13:27] == 0)


def photo(name):
    """The BT.601 luma of one of the photos that ship with scikit-image, rounded as sr_niqe does."""
    return np.round(metrics.rgb_to_y(data.load_image(os.path.join(data.sample_dir(), name))))


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png"])
def test_blur_and_noise_make_a_photo_less_natural(name):
    y = photo(name)
    original = niqe.niqe(y)
    blurred, more_blurred = (niqe.niqe(np.round(gaussian_filter(y, sigma))) for sigma in (2, 4))
    noisy = niqe.niqe(np.round(y + rng.normal(0, 15, y.shape)))
    assert original + 2 < blurred < more_blurred
    assert original + 2 < noisy


def test_only_whole_blocks_count_and_too_small_images_have_no_score():
    y = photo("astronaut.png")[:200, :300]  # 2 x 3 whole 96x96 blocks
    assert niqe.niqe(y) == niqe.niqe(y[:192, :288])
    assert np.isnan(niqe.niqe(y[:191, :191]))  # a single block: no covariance
    assert np.isnan(niqe.niqe(np.full((192, 192), 100.0)))  # no texture: no AGGD can be fitted


def test_sr_niqe_shaves_the_border():
    image = data.load_image(os.path.join(data.sample_dir(), "astronaut.png"))[:200, :296]
    damaged = image.copy()
    damaged[:4], damaged[:, -4:] = 0, 255
    assert niqe.sr_niqe(damaged, shave=4) == niqe.sr_niqe(image, shave=4)
    assert niqe.sr_niqe(damaged, shave=0) != niqe.sr_niqe(image, shave=0)
