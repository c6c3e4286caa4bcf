"""The benchmark metrics of the SR papers' tables (SRCNN's MATLAB code, used by the SRGAN paper).

HR cropped to a multiple of the scale, LR made by MATLAB's imresize, PSNR/SSIM on the BT.601 luma
with `scale` pixels shaved from each border.
"""
import numpy as np
import scipy.ndimage
import scipy.sparse
from scipy.signal import correlate2d


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5, MATLAB's "bicubic"."""
    x = np.abs(x)
    return np.where(x <= 1, (1.5 * x - 2.5) * x * x + 1, np.where(x <= 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))


def _resize_matrix(in_len, scale):
    """Sparse [out_len, in_len] matrix doing MATLAB's imresize along one axis (scale < 1 antialiases)."""
    out_len = int(np.ceil(in_len * scale))
    kernel_width = 4.0 / min(scale, 1.0)
    centres = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based, as MATLAB
    taps = np.floor(centres - kernel_width / 2)[:, None] + np.arange(int(np.ceil(kernel_width)) + 2)
    stretch = min(scale, 1.0)
    weights = stretch * _cubic(stretch * (centres[:, None] - taps))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # symmetric border padding
    columns = mirror[np.mod(taps.astype(np.int64) - 1, 2 * in_len)]
    rows = np.repeat(np.arange(out_len), taps.shape[1])
    return scipy.sparse.csr_matrix((weights.ravel(), (rows, columns.ravel())), shape=(out_len, in_len))


def imresize(image, scale):
    """MATLAB's imresize(image, scale) with its default bicubic: [h, w] or [h, w, c] -> ceil(h * scale) x ceil(w * scale).

    Rows first, then columns, as MATLAB does for equal scales. A uint8 image is rounded to uint8 after
    each pass, as MATLAB's imresizemex does; anything else comes back as float64.
    """
    image = np.asarray(image)
    out = image
    for axis in (0, 1):
        matrix = _resize_matrix(image.shape[axis], scale)
        moved = np.moveaxis(out, axis, 0)
        flat = matrix @ moved.reshape(moved.shape[0], -1).astype(np.float64)
        out = np.moveaxis(flat.reshape((matrix.shape[0],) + moved.shape[1:]), 0, axis)
        if image.dtype == np.uint8:
            out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out


def modcrop(image, scale):
    """Crop the bottom and right so both sides are multiples of `scale`."""
    h, w = image.shape[:2]
    return image[:h - h % scale, :w - w % scale]


def rgb_to_y(image):
    """ITU-R BT.601 luma in [16, 235] as float64 from RGB 0..255 (MATLAB's rgb2ycbcr, unrounded)."""
    rgb = np.asarray(image, np.float64)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def psnr(a, b, peak=255.0):
    """PSNR in dB of two same-shape arrays on a 0..peak scale; inf when identical."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


SSIM_WINDOW = 11  # pixels a side: images smaller than that after shaving have no SSIM


def ssim(a, b, peak=255.0):
    """Mean SSIM of two grayscale images (Wang et al. 2004's ssim_index.m: 11x11 Gaussian, sigma 1.5, valid)."""
    g = np.exp(-(np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2) ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def blur(x):
        return correlate2d(x, window, mode="valid")

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    ssim_map = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def sr_metrics(sr, hr, scale=4):
    """(PSNR, SSIM) of uint8 RGB images on the Y channel with `scale` pixels shaved from each border."""
    sr_y, hr_y = (rgb_to_y(x)[scale:-scale, scale:-scale] for x in (sr, hr))
    return psnr(sr_y, hr_y), ssim(sr_y, hr_y)


def grid_energy(image, scale=4):
    """How strongly a uint8 RGB image repeats a pattern every `scale` pixels, the checkerboard a generator's
    sub-pixel steps can paint: the luma less its scale x scale box mean, averaged at each of the scale^2
    positions within the scale-pixel grid, and the standard deviation of those averages (8-bit levels).
    About 0.1-0.4 for photos and the SRResNet here, under 0.1 for bicubic upscaling."""
    y = modcrop(rgb_to_y(image), scale)
    detail = y - scipy.ndimage.uniform_filter(y, scale)
    h, w = detail.shape
    return float(detail.reshape(h // scale, scale, w // scale, scale).mean(axis=(0, 2)).std())


def bicubic_pair(hr, scale=4):
    """(HR cropped to a multiple of scale, its MATLAB-bicubic LR) as uint8: the benchmarks' test pairs."""
    hr = modcrop(hr, scale)
    return hr, imresize(hr, 1 / scale)


def average(values):
    """Mean of per-image scores over the images that have one (NIQE has none for an image with fewer than
    two whole blocks); nan when none has."""
    values = np.asarray(values, np.float64)
    scored = values[~np.isnan(values)]
    return float(scored.mean()) if scored.size else float("nan")
