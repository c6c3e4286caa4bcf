"""Data for SRGAN: find the images of a dataset, turn them into (LR, HR) training pairs, save image grids.

HR is a crop (or resize) of a photo, LR its bicubic x`scale` downscale; both float32 in [-1, 1].
The same `_prepare` makes the training pairs (random crop and flip) and the evaluation pairs
(centre crop, no flip), so what the model is judged on is made exactly like what it learns from.
"""

import argparse
import collections
import contextlib
import glob
import importlib.util
import math
import os
import sys
import tempfile
import threading
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import scipy.sparse
import tensorflow as tf
from PIL import Image
from scipy.signal import correlate2d

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
PIL_FORMATS = ("JPEG", "PNG", "BMP")  # the only parsers PIL may try: never EPS (ghostscript) on a renamed file
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # max_pixels decides, see _open
HR_PREPS = ("crop", "resize")

# The colour photographs shipped inside scikit-image (its grayscale and synthetic images are left out).
SAMPLE_IMAGES = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png",
)

# name: (what the images are, glob patterns under <dir>, layout shown to the user, where to get them)
_LAYOUTS = {
    "places": ("Places-205", ("?/*/*", "?/*/*/*"), "<letter>/<category>[/<subcategory>]/*.jpg",
               "download Places-205 from http://places.csail.mit.edu/"),
    "dogs": ("Stanford Dogs", ("Images/*/*",), "Images/<synset-breed>/*.jpg",
             "download Stanford Dogs from http://vision.stanford.edu/aditya86/ImageNetDogs/"),
    "celeba": ("CelebA", ("img_align_celeba/*",), "img_align_celeba/*.jpg",
               "download the Align&Cropped CelebA images from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"),
    "folder": ("JPEG/PNG/BMP", ("**/*",), "**/*.{jpg,jpeg,png,bmp}", "put your own images there"),
    "sample": ("scikit-image sample", SAMPLE_IMAGES, "astronaut.png, chelsea.png, ... (colour photos)",
               "install scikit-image, which ships them"),
}
DATASETS = {name: f"{what} images: <dir>/{layout}; {source}" for name, (what, _, layout, source) in _LAYOUTS.items()}
DATASETS["sample"] = "the colour photos shipped inside scikit-image (no download, --data-dir is ignored)"


class DataError(Exception):
    """A problem with the user's data; str(e) is one line saying what is wrong and how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line ("error: ...") instead of usage + error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def sample_dir():
    """skimage/data, the `sample` dataset's photos, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    return os.path.join(os.path.dirname(spec.origin), "data") if spec else "<scikit-image>/data"


def list_images(dataset, data_dir=None):
    """Sorted absolute paths of the images of `dataset` laid out as DATASETS describes, else DataError."""
    if dataset not in _LAYOUTS:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(_LAYOUTS)}")
    what, patterns, layout, source = _LAYOUTS[dataset]
    root = sample_dir() if dataset == "sample" else (data_dir or os.path.join("data", dataset))
    # glob skips hidden files and directories; "**" only recurses for the folder layout
    found = [os.path.join(root, rel) for pattern in patterns for rel in glob.glob(pattern, root_dir=root, recursive=True)]
    paths = sorted(os.path.abspath(p) for p in found if p.lower().endswith(IMAGE_EXTS) and os.path.isfile(p))
    if not paths:
        if os.path.isdir(root) and not os.access(root, os.R_OK | os.X_OK):
            raise DataError(f"cannot read {root}: permission denied")
        missing = "" if os.path.isdir(root) else " (no such directory)"
        hint = "" if dataset == "sample" else " or pass --data-dir"
        raise DataError(f"no {what} images under {root}{missing}: expected {os.path.join(root, layout)}; {source}{hint}")
    return paths


@contextlib.contextmanager
def _open(path, max_pixels=MAX_PIXELS):
    """The PIL image of `path`, header read but pixels not decoded yet; any failure in the block is a DataError.

    PIL's parsers raise many kinds of exceptions on malformed files (see the fuzz test), hence `Exception`.
    """
    try:
        with Image.open(path, formats=PIL_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise DataError(f"image {path} has {image.width}x{image.height} pixels, "
                                f"more than the limit of {max_pixels:,} (--max-pixels)")
            yield image
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def check_image(path, max_pixels=MAX_PIXELS):
    """DataError unless `path` has a JPEG/PNG/BMP header within the pixel limit; cheap: decodes no pixels."""
    with _open(path, max_pixels):
        pass


def load_image(path, max_pixels=MAX_PIXELS):
    """uint8 RGB [h, w, 3] of a JPEG, PNG or BMP file (what training sees), else DataError.

    Grayscale, palette and CMYK become RGB, alpha is dropped (not composited), 16-bit keeps the high byte.
    """
    with _open(path, max_pixels) as image:
        if image.mode.startswith("I"):  # 16-bit grayscale; 16-bit RGB already arrives as 8-bit "RGB"
            gray = (np.asarray(image) >> 8).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        return np.array(image.convert("RGB"))


def _readable(path, max_pixels=MAX_PIXELS):
    try:
        load_image(path, max_pixels)
        return True
    except DataError:
        return False


class Skipped:
    """The files the input pipeline skipped, each counted once though met every epoch; prints the first few."""

    def __init__(self, shown=5):
        self.reasons, self.shown, self._lock = set(), shown, threading.Lock()

    @property
    def count(self):
        return len(self.reasons)

    def add(self, reason):
        with self._lock:
            if reason not in self.reasons:
                self.reasons.add(reason)
                if self.count <= self.shown:
                    print(f"skipped: {reason}", file=sys.stderr, flush=True)


def check_files(paths, max_bad_fraction, max_pixels=MAX_PIXELS, sample=2000, seed=0):
    """(paths without the bad files found, their reasons) after checking the headers of up to `sample`
    files picked at random; DataError if more than `max_bad_fraction` of them are bad.

    Headers only and a bounded sample, so it takes seconds on Places' 2.5M files: the pipeline skips
    the bad files left (truncated ones, those outside the sample) as it meets them.
    """
    picked = np.random.default_rng(seed).permutation(len(paths))[:sample]
    bad = {}
    for i in picked:
        try:
            check_image(paths[i], max_pixels)
        except DataError as e:
            bad[paths[i]] = str(e)
    if len(bad) > max_bad_fraction * len(picked):
        raise DataError(f"{len(bad)} of {len(picked)} image files checked cannot be used, more than "
                        f"--max-bad-fraction {max_bad_fraction}; the first: {next(iter(bad.values()))}")
    return [p for p in paths if p not in bad], list(bad.values())


def _load_draw(paths, index, max_pixels=MAX_PIXELS, min_scale=0, skipped=None):
    """load_image of paths[index], or else of the next file that can be used, each failure counted in
    `skipped`: one image per draw whatever fails, so that draw k always belongs to the same step.

    With min_scale, an image whose short side upscaled to min_scale would exceed max_pixels (a 1-pixel
    line, say) cannot be used either.
    """
    for i in range(index, index + len(paths)):
        path = paths[i % len(paths)]
        try:
            image = load_image(path, max_pixels)
            h, w = image.shape[:2]
            if min(h, w) < min_scale and max(h, w) * min_scale / min(h, w) * min_scale > max_pixels:
                raise DataError(f"image {path} is {w}x{h}: upscaled to a short side of {min_scale} "
                                f"it would have more than {max_pixels:,} pixels (--max-pixels)")
            return image
        except DataError as e:
            if skipped is not None:
                skipped.add(str(e))
    raise DataError(f"none of the {len(paths)} image files can be read any more")


def _prepare(image, hr_size, scale, hr_prep, seeds=None, flip=False):
    """tf op: uint8 image [h, w, 3] -> (lr [hr_size/scale]^2, hr [hr_size]^2) float32 in [-1, 1].

    hr_prep "crop": images with a side below hr_size are first upscaled so the short side is hr_size,
    then cropped; "resize": the whole image squashed to hr_size x hr_size. With `seeds` (stateless
    seeds [2, 2]) the crop is random and the flip (if asked) random; without, centre crop, no flip.
    """
    if hr_size % scale:
        raise ValueError(f"hr_size {hr_size} must be divisible by scale {scale}")
    if hr_prep not in HR_PREPS:
        raise ValueError(f"hr_prep must be one of {HR_PREPS}, got {hr_prep!r}")
    image = tf.cast(image, tf.float32)
    if hr_prep == "resize":
        hr = tf.image.resize(image, [hr_size, hr_size], method="bicubic", antialias=True)
    else:
        size = tf.cast(tf.shape(image)[:2], tf.float64)
        short = tf.reduce_min(size)
        new_size = tf.cast(tf.round(size * hr_size / short), tf.int32)
        image = tf.cond(short < hr_size,
                        lambda: tf.image.resize(image, new_size, method="bicubic", antialias=True),
                        lambda: image)
        if seeds is None:
            hr = tf.image.resize_with_crop_or_pad(image, hr_size, hr_size)
        else:
            hr = tf.image.stateless_random_crop(image, [hr_size, hr_size, 3], seed=seeds[0])
    if flip and seeds is not None:
        hr = tf.image.stateless_random_flip_left_right(hr, seed=seeds[1])
    hr = tf.clip_by_value(hr / 127.5 - 1, -1.0, 1.0)  # bicubic upscaling overshoots
    lr = tf.image.resize(hr, [hr_size // scale] * 2, method="bicubic", antialias=True)
    return tf.clip_by_value(lr, -1.0, 1.0), hr


def make_dataset(paths, hr_size=256, scale=4, batch_size=1, hr_prep="crop", flip=True, seed=None,
                 repeat=True, shuffle=True, start=0, max_pixels=MAX_PIXELS, skipped=None):
    """tf.data.Dataset of (lr [batch, hr_size/scale, hr_size/scale, 3], hr [batch, hr_size, hr_size, 3]).

    Draw k of the endless stream is file permutation(seed, epoch)[k % len(paths)], cropped and flipped
    with seeds made of (seed, k); a file that cannot be used is replaced by the next one that can (see
    _load_draw; counted in `skipped`, a Skipped). So a seeded run sees the same pairs in the same
    order, and `start` = k begins the stream at draw k at no cost: where a resumed run left off.
    One readable file is required up front (else DataError): otherwise no draw could ever be made.
    """
    paths = list(paths)
    if not any(_readable(p, max_pixels) for p in paths):
        raise DataError(f"none of the {len(paths)} image files given can be read")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    min_scale = hr_size if hr_prep == "crop" else 0

    # A Python generator instead of from_tensor_slices keeps millions of paths (Places) out of the
    # GraphDef, which would otherwise be copied into every checkpoint's .meta file.
    def draws():
        epoch, offset = divmod(start, len(paths))
        while repeat or epoch == 0:
            order = np.random.default_rng([seed, epoch]).permutation(len(paths)) if shuffle else range(len(paths))
            for i in range(offset, len(paths)):
                draw = epoch * len(paths) + i
                yield order[i], [[seed, 2 * draw], [seed, 2 * draw + 1]]
            epoch, offset = epoch + 1, 0

    def pair(index, seeds):
        load = lambda i: _load_draw(paths, int(i), max_pixels, min_scale, skipped)
        image = tf.numpy_function(load, [index], tf.uint8)
        image.set_shape([None, None, 3])
        return _prepare(image, hr_size, scale, hr_prep, seeds, flip)

    ds = tf.data.Dataset.from_generator(
        draws, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([2, 2], tf.int64)))
    ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()  # the last resort, e.g. when a huge crop runs out of memory: drops the pair
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_pairs(paths, hr_size=256, scale=4, hr_prep="crop", count=4, max_pixels=MAX_PIXELS):
    """(lr [N, h/scale, w/scale, 3], hr [N, h, w, 3]) float32 numpy of the first `count` readable images,
    centre crops; DataError if none is readable.

    Runs in its own graph and session, so it can be called while another graph is the default.
    """
    images, errors = [], []
    for p in paths:
        if len(images) == count:
            break
        try:
            images.append(load_image(p, max_pixels))
        except DataError as e:
            errors.append(e)
    if not images:
        raise DataError(f"none of the {len(paths)} images can be read; the first: {errors[0]}")
    with tf.Graph().as_default():
        image = tf.compat.v1.placeholder(tf.uint8, [None, None, 3])
        pair = _prepare(image, hr_size, scale, hr_prep)
        with tf.compat.v1.Session() as sess:
            pairs = [sess.run(pair, {image: x}) for x in images]
    lr, hr = zip(*pairs)
    return np.stack(lr), np.stack(hr)


def to_uint8(images):
    """[-1, 1] floats -> uint8 [0, 255], rounded and clipped."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def save_grid(path, rows):
    """Write images in [-1, 1] as a PNG grid: rows[r][c] at row r, column c, top-left in its cell.

    Cells are as big as the largest image, smaller images are padded with black. The PNG is written to
    a temporary file next to `path` and renamed, so a viewer never sees a half-written file.
    """
    rows = [[to_uint8(image) for image in row] for row in rows]
    h = max(image.shape[0] for row in rows for image in row)
    w = max(image.shape[1] for row in rows for image in row)
    grid = np.zeros((h * len(rows), w * max(map(len, rows)), 3), np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[r * h:r * h + image.shape[0], c * w:c * w + image.shape[1]] = image
    write_atomic(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))


# ----------------------------------------------------------------------------- benchmark metrics
# The protocol of the SR papers' tables (SRCNN's MATLAB code, used by the SRGAN paper): HR cropped to
# a multiple of the scale, LR made by MATLAB's imresize, PSNR/SSIM on the BT.601 luma with `scale`
# pixels shaved from each border.

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


def ssim(a, b, peak=255.0):
    """Mean SSIM of two grayscale images (Wang et al. 2004's ssim_index.m: 11x11 Gaussian, sigma 1.5, valid)."""
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
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


def bicubic_pair(hr, scale=4):
    """(HR cropped to a multiple of scale, its MATLAB-bicubic LR) as uint8: the benchmarks' test pairs."""
    hr = modcrop(hr, scale)
    return hr, imresize(hr, 1 / scale)


def write_atomic(path, write):
    """Create `path` by calling write(binary file) on a temporary file in the same folder, renamed at the end."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_comparison(path, lr, bicubic, sr, hr, zoom=3):
    """PNG of uint8 RGB images: LR (pixels enlarged) | bicubic | SR | HR, and below, their central third zoomed `zoom` x."""
    scale = hr.shape[0] // lr.shape[0]
    images = [np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1), bicubic, sr, hr]
    h, w = hr.shape[:2]
    top, left = (h - h // zoom) // 2, (w - w // zoom) // 2
    crops = [np.repeat(np.repeat(x[top:top + h // zoom, left:left + w // zoom], zoom, 0), zoom, 1) for x in images]
    save_grid(path, [[x / 127.5 - 1 for x in images], [x / 127.5 - 1 for x in crops]])


# ----------------------------------------------------------------------------- training curves and GAN health

CURVES = {  # tag under summaries/: title (the report's figures 6 to 10, then D's outputs)
    "g_loss": "generator loss", "d_loss": "discriminator loss", "adv_loss": "adversarial loss",
    "content_loss": "content loss", "mse_loss": "MSE loss",
}


def read_scalars(run_dir):
    """{tag: (steps, values)} of the summaries/* scalars in a run's TensorBoard files.

    A file that ends in a half-written record (its run is still writing it) is read up to there.
    """
    series = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("summaries/") and value.HasField("simple_value"):
                        series.setdefault(value.tag[len("summaries/"):], {})[event.step] = value.simple_value
        except tf.errors.DataLossError:
            pass
    return {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)])) for tag, points in series.items()}


def smooth(values, weight=0.9):
    """TensorBoard's smoothing: a debiased exponential moving average."""
    out, average = np.empty(len(values)), 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


def plot_training(run_dir):
    """Write run_dir/plots/<tag>.png for each loss and D_outputs.png (mean D(x), D(G(z))); returns their paths.

    Each curve is drawn smoothed, with the raw values faint behind it; positive losses on a log scale.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    figures = [(tag, title, [tag]) for tag, title in CURVES.items() if tag in scalars]
    if "D_x" in scalars:
        figures.append(("D_outputs", "mean discriminator output", ["D_x", "D_G_z"]))
    paths = []
    for name, title, tags in figures:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for tag, color in zip(tags, ("C0", "C3")):
            steps, values = scalars[tag]
            label = {"D_x": "D(x)", "D_G_z": "D(G(z))"}.get(tag, tag)
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values), color=color, linewidth=1.5, label=label)
        ax.set(title=title, xlabel="iteration")
        if name != "D_outputs" and all((scalars[tag][1] > 0).all() for tag in tags):
            ax.set_yscale("log")  # a loss falls by orders of magnitude; its later steps matter as much
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(run_dir, "plots", name + ".png"))
        write_atomic(paths[-1], lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
    return paths


class GANHealth:
    """Looks at the values each GAN iteration already fetches and names what looks unhealthy."""

    def __init__(self, window=50):
        self.recent = collections.deque(maxlen=window)
        self.problems = []

    def update(self, losses):
        """Add one iteration's {"D_x", "D_G_z", "adv_loss", ...}; returns (and keeps) the problems seen, [] when healthy."""
        self.recent.append(losses)
        problems = [f"{tag} is {value}" for tag, value in losses.items() if not math.isfinite(value)]
        if len(self.recent) == self.recent.maxlen:
            n = len(self.recent)

            def mostly(test):  # 90%: a GAN that collapsed still has the odd spike
                return sum(map(test, self.recent)) >= 0.9 * n

            if mostly(lambda step: step["D_G_z"] < 0.01):
                problems.append(f"D(G(z)) below 0.01 in most of the last {n} iterations: the discriminator wins, "
                                "the generator gets little adversarial signal")
            if mostly(lambda step: step["D_x"] > 0.99):
                problems.append(f"D(x) above 0.99 in most of the last {n} iterations")
            if mostly(lambda step: step["adv_loss"] > 10):
                problems.append(f"adversarial loss above 10 in most of the last {n} iterations (exploding)")
        self.problems = problems
        return problems
