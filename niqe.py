"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan and Bovik, "Making a 'Completely Blind'
Image Quality Analyzer", IEEE Signal Processing Letters 2013): how far the natural-scene statistics of an
image lie from those of pristine photographs. No reference image is needed; lower is more natural.

A port of the authors' MATLAB release (computequality.m, computefeature.m, estimateaggdparam.m) with
their pristine model (weights/niqe_pris_params.npz, see weights/README.md). Per 96x96 block (only whole
blocks, from the top left, no overlap) and at two scales (the image, then its MATLAB-bicubic half), 18
features of the MSCN coefficients: an AGGD fitted by moment matching to the coefficients and to their
products with the 4 neighbours (right, below, the two diagonals, wrapping around the block as circshift
does). The image's score is the distance between a Gaussian fitted to its blocks' 36 features and the
pristine one, with their pooled covariance. Like computequality.m, every block counts: the sharpness
(block variance) selection of the release is used only when fitting the pristine model, not here.
"""
import functools
import os

import numpy as np
from scipy.special import gamma

import metrics

BLOCK = 96
PARAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "niqe_pris_params.npz")

# estimateaggdparam.m's grid of shapes, 0.2:0.001:10, and the ratio E[|x|]^2 / E[x^2] of a GGD of each shape
_SHAPES = 0.2 + 0.001 * np.arange(9801)
_RATIOS = gamma(2 / _SHAPES) ** 2 / (gamma(1 / _SHAPES) * gamma(3 / _SHAPES))


@functools.cache
def pristine_model():
    """(mean [36], covariance [36, 36], 7x7 Gaussian window) of the authors' pristine model."""
    with np.load(PARAMS) as params:
        return params["mu_pris_param"][0], params["cov_pris_param"], params["gaussian_window"]


def aggd_fit(x):
    """(shape alpha, left scale, right scale) of an asymmetric generalised Gaussian fitted to the values x
    by moment matching; nan when x has no negative or no positive value."""
    x = np.ravel(x)
    negative, positive = x[x < 0], x[x > 0]
    if not len(negative) or not len(positive):
        return np.nan, np.nan, np.nan
    left, right = np.sqrt(np.mean(negative ** 2)), np.sqrt(np.mean(positive ** 2))
    ratio = left / right
    r = np.mean(np.abs(x)) ** 2 / np.mean(x ** 2)
    r_norm = r * (ratio ** 3 + 1) * (ratio + 1) / (ratio ** 2 + 1) ** 2
    alpha = _SHAPES[np.argmin((_RATIOS - r_norm) ** 2)]
    to_scale = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * to_scale, right * to_scale


def block_features(mscn):
    """The 18 features of one block of MSCN coefficients (computefeature.m)."""
    alpha, left, right = aggd_fit(mscn)
    features = [alpha, (left + right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, left, right = aggd_fit(mscn * np.roll(mscn, shift, axis=(0, 1)))
        features += [alpha, (right - left) * gamma(2 / alpha) / gamma(1 / alpha), left, right]
    return features


def mscn(image, window):
    """Mean-subtracted contrast-normalised coefficients: local mean and deviation under `window` (which sums
    to 1), borders replicated as imfilter's 'replicate'.

    The local statistics are summed as offsets from each pixel's own value, so that a flat neighbourhood
    gives exactly 0, as in exact arithmetic; the textbook sum leaves a rounding residue there whose sign
    would decide on which side of the AGGD fits the pixel falls.
    """
    r = window.shape[0] // 2
    padded = np.pad(image, r, mode="edge")
    offset, square = np.zeros_like(image), np.zeros_like(image)
    for (i, j), weight in np.ndenumerate(window):
        difference = padded[i:i + image.shape[0], j:j + image.shape[1]] - image
        offset += weight * difference
        square += weight * difference * difference
    return -offset / (np.sqrt(np.abs(square - offset * offset)) + 1)


def niqe(image):
    """NIQE of a grayscale image [h, w] on a 0..255 scale; nan when it holds fewer than two whole 96x96 blocks
    (one block gives no covariance) or when fewer than two blocks have any texture."""
    mu_pristine, cov_pristine, window = pristine_model()
    image = np.asarray(image, np.float64)
    rows, cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    if rows * cols < 2:
        return float("nan")
    image = image[:rows * BLOCK, :cols * BLOCK]
    features = []
    for size in (BLOCK, BLOCK // 2):
        coefficients = mscn(image, window)
        features.append([block_features(coefficients[r * size:(r + 1) * size, c * size:(c + 1) * size])
                         for c in range(cols) for r in range(rows)])
        image = metrics.imresize(image, 0.5)
    features = np.concatenate(features, axis=1)
    complete = features[~np.isnan(features).any(axis=1)]  # nancov: blocks with a nan feature are left out
    if len(complete) < 2:
        return float("nan")
    difference = mu_pristine - np.nanmean(features, axis=0)
    pooled = (cov_pristine + np.cov(complete, rowvar=False)) / 2
    return float(np.sqrt(difference @ np.linalg.pinv(pooled) @ difference))


def sr_niqe(image, shave=4):
    """NIQE of a uint8 RGB image as the SR tables report it: on the BT.601 luma rounded to integers (MATLAB's
    rgb2ycbcr of a uint8 image, which the authors' code is given), `shave` pixels shaved from each border."""
    y = np.round(metrics.rgb_to_y(image))
    return niqe(y[shave:y.shape[0] - shave, shave:y.shape[1] - shave])
