"""The training data: find a dataset's images, read them, check them, and turn them into (LR, HR) pairs.

HR is a crop (or resize) of a photo, LR its bicubic x`scale` downscale; both float32 in [-1, 1].
The same `_prepare` makes the training pairs (random crop and flip) and the evaluation pairs
(centre crop, no flip), so what the model is judged on is made exactly like what it learns from.
"""
import contextlib
import glob
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

import utils
from tflib import tf, tf1

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
PIL_FORMATS = ("JPEG", "PNG", "BMP")  # the only parsers PIL may try: never EPS (ghostscript) on a renamed file
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)
IMAGE_CACHE_BYTES = 1 << 30  # decoded training images kept in memory (all of T91 or the 80 scene photos)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # max_pixels decides, see _open
HR_PREPS = ("crop", "resize")
AUGMENTS = ("rot90", "scale")  # of the training photos, as SRCNN, FSRCNN and VDSR augment T91
MIN_AUGMENT_SCALE = 0.5

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
    "folder": ("JPEG/PNG/BMP", None, "**/*.{jpg,jpeg,png,bmp}", "put your own images there"),  # see _walk
    "sample": ("scikit-image sample", SAMPLE_IMAGES, "astronaut.png, chelsea.png, ... (colour photos)",
               "install scikit-image, which ships them"),
}
DATASETS = {name: f"{what} images: <dir>/{layout}; {source}" for name, (what, _, layout, source) in _LAYOUTS.items()}
DATASETS["sample"] = "the colour photos shipped inside scikit-image (no download, --data-dir is ignored)"


class DataError(Exception):
    """A problem with the user's data; str(e) is one line saying what is wrong and how to fix it."""


def sample_dir():
    """skimage/data, the `sample` dataset's photos, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    return os.path.join(os.path.dirname(spec.origin), "data") if spec else "<scikit-image>/data"


def _walk(root):
    """The files in the tree under `root`, following symbolic links but entering each real folder once: a
    link back up the tree would otherwise be walked until the kernel's limit, listing every file 40 times."""
    seen = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        if os.path.realpath(folder) in seen:
            subfolders.clear()
            continue
        seen.add(os.path.realpath(folder))
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        yield from (os.path.join(folder, name) for name in files if not name.startswith("."))


def list_images(dataset, data_dir=None, flag="--data-dir"):
    """Sorted absolute paths of the images of `dataset` laid out as DATASETS describes, else DataError, which
    names `flag` (the option that chose the folder; None: no option did) as the way to another one."""
    if dataset not in _LAYOUTS:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(_LAYOUTS)}")
    what, patterns, layout, source = _LAYOUTS[dataset]
    root = sample_dir() if dataset == "sample" else (data_dir or os.path.join("data", dataset))
    # glob and _walk skip hidden files and directories
    found = _walk(root) if patterns is None else [
        os.path.join(root, rel) for pattern in patterns for rel in glob.glob(pattern, root_dir=root)]
    paths = sorted(os.path.abspath(p) for p in found if p.lower().endswith(IMAGE_EXTS) and os.path.isfile(p))
    if not paths:
        if os.path.isdir(root) and not os.access(root, os.R_OK | os.X_OK):
            raise DataError(f"cannot read {root}: permission denied")
        missing = "" if os.path.isdir(root) else " (no such directory)"
        hint = "" if dataset == "sample" or flag is None else f" or name another folder with {flag}"
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
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: not a JPEG, PNG or BMP file") from None
    except Exception as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {utils.first_line(e)}") from None


def check_image(path, max_pixels=MAX_PIXELS):
    """(width, height) from the header of `path`, DataError unless it is a JPEG/PNG/BMP header within the
    pixel limit; cheap: decodes no pixels."""
    with _open(path, max_pixels) as image:
        return image.size


def png_bit_depth(path):
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if head[:8] == utils.PNG_SIGNATURE and len(head) == 25 else 8


def _decode_png16(path):
    """[h, w, c] uint16 of a 16-bit PNG, decoded by TensorFlow in a graph of its own: PIL keeps only the
    high byte of 16-bit colour."""
    with open(path, "rb") as f, tf.Graph().as_default():
        png = tf1.placeholder(tf.string)
        with tf1.Session() as sess:
            return sess.run(tf.io.decode_png(png, dtype=tf.uint16), {png: f.read()})


def upright(pixels, orientation):
    """pixels [h, w, ...] turned as the EXIF Orientation tag (1 to 8) says viewers show them."""
    turns = {3: 2, 4: 2, 5: 1, 6: -1, 7: -1, 8: 1}.get(orientation, 0)  # quarter turns, anticlockwise
    flipped = pixels[:, ::-1] if orientation in (2, 4, 5, 7) else pixels
    return np.rot90(flipped, turns)


def read_image(path, max_pixels=MAX_PIXELS, full_depth=False):
    """[h, w, c] pixels of a JPEG, PNG or BMP file the way viewers show it (EXIF orientation applied), else
    DataError; c is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), the dtype uint8, or uint16 for 16-bit
    grey. full_depth: 16-bit colour PNGs as uint16 too (decoded by TensorFlow, so not inside the pipeline)."""
    with _open(path, max_pixels) as image:
        orientation = image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
        if image.mode.startswith("I"):  # 16-bit grey PNG
            pixels = np.asarray(image).astype(np.uint16)
        elif full_depth and image.format == "PNG" and png_bit_depth(path) == 16:
            try:
                pixels = _decode_png16(path)
            except tf.errors.OpError as e:
                raise DataError(f"cannot read image {path}: {utils.first_line(e)}") from None
        else:
            if image.mode == "1":  # black and white: grey
                image = image.convert("L")
            elif image.mode not in ("L", "LA", "RGB", "RGBA"):  # palette, CMYK
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            pixels = np.asarray(image)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return np.ascontiguousarray(upright(pixels, orientation))


def load_image(path, max_pixels=MAX_PIXELS):
    """uint8 RGB [h, w, 3] of a JPEG, PNG or BMP file (what training and evaluation see), else DataError.

    read_image's pixels with grey made RGB, alpha dropped (not composited) and 16 bits cut to the high byte.
    """
    pixels = read_image(path, max_pixels)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return pixels[:, :, :3] if pixels.shape[2] >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)


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


class ImageCache(dict):
    """Decoded images by path, kept until `budget` bytes are used (first come, never evicted): a small
    training set is decoded once, not at every draw (a 1024-pixel JPEG takes longer to decode than
    its 96-pixel crop takes to train on); a large one, beyond the budget, is decoded as before."""

    def __init__(self, budget):
        super().__init__()
        self.budget = budget

    def add(self, path, image):
        if image.nbytes <= self.budget:
            self[path] = image
            self.budget -= image.nbytes


def _load_draw(paths, index, max_pixels=MAX_PIXELS, min_scale=0, skipped=None, cache=None):
    """load_image of paths[index] (from `cache`, an ImageCache, when it has it), or else of the next
    file that can be used, each failure counted in `skipped`: one image per draw whatever fails, so
    that draw k always belongs to the same step.

    With min_scale, an image whose short side upscaled to min_scale would exceed max_pixels (a 1-pixel
    line, say) cannot be used either.
    """
    for i in range(index, index + len(paths)):
        path = paths[i % len(paths)]
        if cache is not None and path in cache:
            return cache[path]
        try:
            image = load_image(path, max_pixels)
            h, w = image.shape[:2]
            if min(h, w) < min_scale and max(h, w) * min_scale / min(h, w) * min_scale > max_pixels:
                raise DataError(f"image {path} is {w}x{h}: upscaled to a short side of {min_scale} "
                                f"it would have more than {max_pixels:,} pixels (--max-pixels)")
            if cache is not None:
                cache.add(path, image)
            return image
        except DataError as e:
            if skipped is not None:
                skipped.add(str(e))
    raise DataError(f"none of the {len(paths)} image files can be read any more")


def _prepare(image, hr_size, scale, hr_prep, seeds=None, flip=False, augment=()):
    """tf op: uint8 image [h, w, 3] -> (lr [hr_size/scale]^2, hr [hr_size]^2) float32 in [-1, 1].

    hr_prep "crop": images with a side below hr_size are first upscaled so the short side is hr_size,
    then cropped; "resize": the whole image squashed to hr_size x hr_size. With `seeds` (stateless
    seeds [2, 2]) the crop is random and the flip (if asked) random; without, centre crop, no flip.
    With seeds, `augment` (some of AUGMENTS) adds "scale": the photo downscaled first by a random factor
    from 1 to MIN_AUGMENT_SCALE (never below hr_size on its short side), and "rot90": a random number
    of quarter turns of the crop, which with the flip gives all eight orientations.
    """
    if hr_size % scale:
        raise ValueError(f"hr_size {hr_size} must be divisible by scale {scale}")
    if hr_prep not in HR_PREPS:
        raise ValueError(f"hr_prep must be one of {HR_PREPS}, got {hr_prep!r}")
    if set(augment) - set(AUGMENTS):
        raise ValueError(f"augment must be some of {AUGMENTS}, got {augment!r}")
    image = tf.cast(image, tf.float32)
    augment = augment if seeds is not None else ()
    scale_seed, turn_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[1], 2)) if augment else (None, None)
    if "scale" in augment:
        size = tf.cast(tf.shape(image)[:2], tf.float64)
        least = tf.minimum(tf.constant(1.0, tf.float64), hr_size / tf.reduce_min(size))
        factor = tf.maximum(least, tf.random.stateless_uniform([], scale_seed, MIN_AUGMENT_SCALE, 1.0, tf.float64))
        image = tf.cond(factor < 1,
                        lambda: tf.image.resize(image, tf.cast(tf.round(size * factor), tf.int32), method="bicubic",
                                                antialias=True),
                        lambda: image)
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
    if "rot90" in augment:
        hr = tf.image.rot90(hr, tf.random.stateless_uniform([], turn_seed, 0, 4, tf.int32))
    hr = tf.clip_by_value(hr / 127.5 - 1, -1.0, 1.0)  # bicubic upscaling overshoots
    lr = tf.image.resize(hr, [hr_size // scale] * 2, method="bicubic", antialias=True)
    return tf.clip_by_value(lr, -1.0, 1.0), hr


def make_dataset(paths, hr_size=256, scale=4, batch_size=1, hr_prep="crop", flip=True, seed=None,
                 repeat=True, shuffle=True, start=0, max_pixels=MAX_PIXELS, skipped=None,
                 cache_bytes=IMAGE_CACHE_BYTES, augment=()):
    """tf.data.Dataset of (lr [batch, hr_size/scale, hr_size/scale, 3], hr [batch, hr_size, hr_size, 3]).

    Draw k of the endless stream is file permutation(seed, epoch)[k % len(paths)], cropped, flipped and
    augmented (_prepare) with seeds made of (seed, k); a file that cannot be used is replaced by the next
    one that can (see _load_draw; counted in `skipped`, a Skipped). So a seeded run sees the same pairs in
    the same order, and `start` = k begins the stream at draw k at no cost: where a resumed run left off.
    One readable file is required up front (else DataError): otherwise no draw could ever be made.
    Decoded images are kept in memory up to cache_bytes (ImageCache).
    """
    paths = list(paths)
    if not any(_readable(p, max_pixels) for p in paths):
        raise DataError(f"none of the {len(paths)} image files given can be read")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    min_scale = hr_size if hr_prep == "crop" else 0
    cache = ImageCache(cache_bytes)

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
        load = lambda i: _load_draw(paths, int(i), max_pixels, min_scale, skipped, cache)
        image = tf.numpy_function(load, [index], tf.uint8)
        image.set_shape([None, None, 3])
        return _prepare(image, hr_size, scale, hr_prep, seeds, flip, augment)

    ds = tf.data.Dataset.from_generator(
        draws, output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([2, 2], tf.int64)))
    ds = ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()  # the last resort, e.g. when a huge crop runs out of memory: drops the pair
    return without_autotuning(ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def without_autotuning(ds):
    """ds without tf.data's autotuning: its model thread sleeps up to a minute between tunings, and
    closing the session can wait out that sleep (docs/performance.md). AUTOTUNE then means min(16,
    cores) parallel calls."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


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
        image = tf1.placeholder(tf.uint8, [None, None, 3])
        pair = _prepare(image, hr_size, scale, hr_prep)
        with tf1.Session() as sess:
            pairs = [sess.run(pair, {image: x}) for x in images]
    lr, hr = zip(*pairs)
    return np.stack(lr), np.stack(hr)

