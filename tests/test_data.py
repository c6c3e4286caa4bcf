"""Tests for data.py: dataset layouts, decoding, the tf.data pipeline (run in graph mode like train.py), grids."""

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import tensorflow as tf
from PIL import Image

import data
import utils

rng = np.random.default_rng(0)


def noise(h, w, c=3):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def write(path, image, mode=None):
    """Save a uint8 array (or PIL image) with PIL, format from the extension; returns the absolute path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = image if isinstance(image, Image.Image) else Image.fromarray(image.squeeze(), mode)
    image.save(path)
    return os.path.abspath(path)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path, image):
    """16-bit grey [h, w, 1] or RGB [h, w, 3] PNG, written by hand because PIL cannot write 16-bit RGB."""
    h, w, c = image.shape
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in image)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    return os.path.abspath(path)


def take(paths, n=None, **kwargs):
    """(lr, hr, bicubic downscale of hr) of the first n batches (all if None) of make_dataset, in graph mode."""
    with tf.Graph().as_default():
        ds = data.make_dataset(paths, **kwargs)
        lr, hr = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        down = tf.image.resize(hr, lr.shape[1:3], method="bicubic", antialias=True)
        fetch = (lr, hr, tf.clip_by_value(down, -1.0, 1.0))
        batches = []
        with tf.compat.v1.Session() as sess:
            try:
                while n is None or len(batches) < n:
                    batches.append(sess.run(fetch))
            except tf.errors.OutOfRangeError:
                pass
    return tuple(np.concatenate(x) for x in zip(*batches))


# ---------------------------------------------------------------- dataset layouts

def build_tree(root, name):
    """A tiny dataset of the `name` layout under root; returns the image paths list_images must find."""
    j = lambda *parts: os.path.join(root, *parts)
    if name == "places":
        good = [write(j("a", "abbey", "00000001.jpg"), noise(40, 48)),
                write(j("a", "apartment_building", "outdoor", "00000002.png"), noise(20, 24)),  # smaller than crop
                write(j("b", "bakery", "00000003.JPG"), noise(36, 36, 1))]  # grayscale, upper-case extension
        stray = [j("top.jpg"), j("a", "stray.jpg"), j("abbey", "x", "y.jpg"), j("a", "abbey", ".hidden.jpg")]
    elif name == "dogs":
        good = [write(j("Images", "n02085620-Chihuahua", "n02085620_10074.jpg"), noise(50, 40)),
                write(j("Images", "n02085620-Chihuahua", "n02085620_2.bmp"), noise(32, 40)),
                write(j("Images", "n02086240-Shih-Tzu", "n02086240_1.png"), noise(30, 34, 4))]  # RGBA, small
        stray = [j("Images", "top.jpg"), j("Annotation", "n02085620-Chihuahua", "n02085620_1.jpg")]
    elif name == "celeba":
        good = [write(j("img_align_celeba", "000001.jpg"), noise(44, 36)),
                write(j("img_align_celeba", "000002.jpg"), noise(36, 44)),
                write_png16(j("img_align_celeba", "000003.png"), rng.integers(0, 65536, (40, 40, 3)))]
        stray = [j("stray.jpg"), j("img_align_celeba", "sub", "x.jpg")]
    else:
        good = [write(j("x.jpeg"), noise(33, 47)),
                write(j("a", "b", "c", "y.png"), noise(16, 64)),  # short side below the crop
                write(j("z.bmp"), noise(40, 40))]
        stray = [j(".hidden", "q.jpg"), j("a", ".q.png")]
    for path in stray:
        write(path, noise(40, 40))
    with open(j("notes.txt"), "w") as f:
        f.write("not an image")
    return good


LAYOUTS = ["places", "dogs", "celeba", "folder"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """name -> (root, images) for every layout, built under <tmp>/data/<name>."""
    base = tmp_path_factory.mktemp("trees")
    return {name: (str(base / "data" / name), build_tree(str(base / "data" / name), name)) for name in LAYOUTS}


@pytest.mark.parametrize("name", LAYOUTS)
def test_list_images_finds_exactly_the_layout(trees, name, monkeypatch):
    root, images = trees[name]
    assert data.list_images(name, root) == sorted(images)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(root)))  # the default is data/<name> in the cwd
    assert data.list_images(name) == sorted(images)


@pytest.mark.parametrize("name, words", [
    ("places", ["<letter>/<category>", "http://places.csail.mit.edu/"]),
    ("dogs", ["Images/<synset-breed>/*.jpg", "http://vision.stanford.edu/aditya86/ImageNetDogs/"]),
    ("celeba", ["img_align_celeba/*.jpg", "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"]),
    ("folder", ["*.{jpg,jpeg,png,bmp}"]),
])
def test_missing_or_empty_dir_says_layout_and_source(tmp_path, name, words):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    for root, reason in [(tmp_path / "missing", "no such directory"), (empty, "")]:
        with pytest.raises(data.DataError) as e:
            data.list_images(name, str(root))
        message = str(e.value)
        assert "\n" not in message and str(root) in message and reason in message
        assert all(word in message for word in words), message
        assert message.endswith("or name another folder with --data-dir"), message
        assert name in data.DATASETS and all(word in data.DATASETS[name] for word in words)


def test_unreadable_dir_says_so(tmp_path, monkeypatch):
    """glob silently finds nothing in a directory it cannot read (root can read anything: hence the patch)."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(data.DataError, match=f"cannot read {tmp_path}: permission denied"):
        data.list_images("folder", str(tmp_path))


def test_wrong_layout_is_an_error(trees):
    """A places-style tree is not a CelebA dataset (its images are all outside img_align_celeba/)."""
    with pytest.raises(data.DataError, match="img_align_celeba"):
        data.list_images("celeba", trees["places"][0])


def test_sample_dataset_is_the_colour_photos():
    paths = data.list_images("sample", "ignored/dir")
    assert [os.path.basename(p) for p in paths] == sorted(data.SAMPLE_IMAGES)
    for path in paths:
        image = data.load_image(path)
        assert image.ndim == 3 and np.ptp(image.astype(int)[..., 0] - image[..., 2]) > 0, path


# ---------------------------------------------------------------- pipeline

@pytest.mark.parametrize("hr_prep", ["crop", "resize"])
@pytest.mark.parametrize("name", LAYOUTS + ["sample"])
def test_make_dataset_shapes_ranges_and_lr(trees, name, hr_prep):
    paths = data.list_images("sample") if name == "sample" else trees[name][1]
    hr_size = 48 if name == "sample" else 32
    lr, hr, down = take(paths, 3, hr_size=hr_size, batch_size=2, hr_prep=hr_prep, seed=0)
    assert lr.shape == (6, hr_size // 4, hr_size // 4, 3) and hr.shape == (6, hr_size, hr_size, 3)
    assert lr.dtype == hr.dtype == np.float32
    assert lr.min() >= -1 and lr.max() <= 1 and hr.min() >= -1 and hr.max() <= 1
    assert hr.std() > 0.1  # real pixels, not a constant
    np.testing.assert_allclose(lr, down, atol=1e-5)


def test_static_shapes_for_the_graph(trees):
    with tf.Graph().as_default():
        lr, hr = tf.compat.v1.data.make_one_shot_iterator(
            data.make_dataset(trees["folder"][1], hr_size=64, batch_size=3)).get_next()
        assert lr.shape.as_list() == [3, 16, 16, 3] and hr.shape.as_list() == [3, 64, 64, 3]


def test_the_pipeline_runs_no_autotuning_thread(trees):
    """With autotuning on, closing a session could wait for its model thread's sleep between tunings:
    up to a minute (docs/performance.md, "The input pipeline without tf.data's autotuning")."""
    with tf.Graph().as_default():
        ds = data.make_dataset(trees["folder"][1], hr_size=32)
        assert ds.options().autotune.enabled is False


def test_bad_sizes_are_value_errors(trees):
    with pytest.raises(ValueError, match="divisible"):
        data.make_dataset(trees["folder"][1], hr_size=30)
    with pytest.raises(ValueError, match="hr_prep"):
        data.make_dataset(trees["folder"][1], hr_prep="squash")


def test_flip(tmp_path):
    gradient = np.broadcast_to(np.linspace(0, 255, 16).astype(np.uint8)[None, :, None], (16, 16, 3))
    path = write(str(tmp_path / "gradient.png"), np.ascontiguousarray(gradient))
    image = gradient / 127.5 - 1
    _, hr, _ = take([path], 40, hr_size=16, flip=True, seed=0)
    flipped = [np.allclose(x, image[:, ::-1], atol=1e-6) for x in hr]
    assert all(f or np.allclose(x, image, atol=1e-6) for f, x in zip(flipped, hr))
    assert 0 < sum(flipped) < len(hr)
    _, hr, _ = take([path], 40, hr_size=16, flip=False, seed=0)
    np.testing.assert_allclose(hr, np.broadcast_to(image, hr.shape), atol=1e-6)


def test_rot90_with_the_flip_gives_the_eight_orientations(tmp_path):
    noise_image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = write(str(tmp_path / "noise.png"), noise_image)
    image = noise_image / 127.5 - 1
    orientations = [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]
    _, hr, _ = take([path], 64, hr_size=16, seed=0, augment=("rot90",))
    seen = [next(i for i, o in enumerate(orientations) if np.allclose(x, o, atol=1e-6)) for x in hr]
    assert sorted(set(seen)) == list(range(8))
    _, again, _ = take([path], 64, hr_size=16, seed=0, augment=("rot90",))
    np.testing.assert_array_equal(hr, again)  # seeded: the same turns in a second run


def test_scale_downscales_the_photo_by_up_to_a_half_and_never_below_the_crop(tmp_path):
    ramp = np.broadcast_to(np.linspace(0, 252, 64).astype(np.uint8)[None, :, None], (64, 64, 3))
    path = write(str(tmp_path / "ramp.png"), np.ascontiguousarray(ramp))
    _, hr, _ = take([path], 60, hr_size=16, flip=False, seed=0, augment=("scale",))
    slopes = np.median(np.diff(hr[:, 8, :, 0], axis=1), axis=1) / (4 / 127.5)  # against the photo's own
    assert slopes.min() > 0.97 and slopes.max() < 2.03 and np.ptp(slopes) > 0.5, slopes
    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)  # as small as the crop: left as it is
    _, hr, _ = take([write(str(tmp_path / "small.png"), small)], 8, hr_size=16, flip=False, seed=0, augment=("scale",))
    np.testing.assert_allclose(hr, np.broadcast_to(small / 127.5 - 1, hr.shape), atol=1e-6)


def test_order_shuffle_and_seed(tmp_path):
    colours = np.arange(8) * 30
    paths = [write(str(tmp_path / f"{i}.png"), np.full((32, 32, 3), c, np.uint8)) for i, c in enumerate(colours)]
    first = lambda hr: list(np.round((hr[:, 0, 0, 0] + 1) * 127.5).astype(int))
    assert first(take(paths, hr_size=16, shuffle=False, repeat=False)[1]) == list(colours)
    two_epochs = first(take(paths, 16, hr_size=16, seed=0)[1])
    assert sorted(two_epochs) == sorted(list(colours) * 2) and two_epochs != list(colours) * 2

    textured = [write(str(tmp_path / f"t{i}.png"), noise(32, 32)) for i in range(4)]
    crops = lambda seed: sorted(x.tobytes() for x in take(textured, hr_size=16, seed=seed, repeat=False)[1])
    assert crops(1) == crops(1) != crops(2)


def test_corrupt_file_is_replaced(tmp_path):
    good = [write(str(tmp_path / f"{i}.jpg"), noise(20, 20)) for i in range(3)]
    bad = str(tmp_path / "bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 this is not really a jpeg")
    lr, hr, _ = take([bad] + good, hr_size=16, shuffle=False, repeat=False)
    assert len(hr) == 4  # one pair per draw: the next good file takes the bad one's place
    assert len(take([bad] + good, 6, hr_size=16)[1]) == 6  # repeating keeps going
    with pytest.raises(data.DataError):
        data.make_dataset([bad], hr_size=16)  # would never yield with repeat=True


# ---------------------------------------------------------------- decoding

def palette_image():
    image = Image.fromarray(rng.integers(0, 4, (16, 16), dtype=np.uint8), "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 200, 10])
    return image


def decode_cases(tmp):
    """(path, expected uint8 RGB) for the formats that need conversion."""
    gray, rgba, rgb = noise(16, 16, 1), noise(16, 16, 4), noise(16, 16)
    gray16, rgb16 = rng.integers(0, 65536, (16, 16, 1)), rng.integers(0, 65536, (16, 16, 3))
    palette = palette_image()
    bits = Image.fromarray(noise(16, 16, 1).squeeze() > 127)
    return {
        "gray png": (write(f"{tmp}/g.png", gray), gray.repeat(3, 2)),
        "rgba png": (write(f"{tmp}/a.png", rgba), rgba[..., :3]),
        "gray 16-bit png": (write_png16(f"{tmp}/g16.png", gray16), (gray16 >> 8).repeat(3, 2)),
        "rgb 16-bit png": (write_png16(f"{tmp}/c16.png", rgb16), rgb16 >> 8),
        "rgb bmp": (write(f"{tmp}/c.bmp", rgb), rgb),
        "gray bmp": (write(f"{tmp}/g.bmp", gray), gray.repeat(3, 2)),
        "palette bmp": (write(f"{tmp}/p.bmp", palette), np.array(palette.convert("RGB"))),
        "1-bit bmp": (write(f"{tmp}/b.bmp", bits), np.array(bits).astype(np.uint8)[..., None].repeat(3, 2) * 255),
        "gray jpg": (write(f"{tmp}/g.jpg", gray), None),
        # JPEG pixels depend on the IDCT; training must see what PIL (libjpeg's accurate IDCT) sees
        "rgb jpg": (write(f"{tmp}/c.jpg", rgb), None),
    }


def test_decoding(tmp_path):
    cases = decode_cases(tmp_path)
    _, hrs, _ = take([path for path, _ in cases.values()], hr_size=16, flip=False, shuffle=False, repeat=False)
    assert len(hrs) == len(cases)
    for (name, (path, expected)), hr in zip(cases.items(), hrs):
        if expected is None:
            expected = np.array(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(data.load_image(path), expected, err_msg=name)
        np.testing.assert_allclose(hr, expected / 127.5 - 1, atol=1e-6, err_msg=name)


def test_load_image_error(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"nope")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load_image(str(path))


# ---------------------------------------------------------------- evaluation pairs

def test_eval_pairs_is_a_centre_crop(tmp_path):
    images = [noise(40, 50) for _ in range(5)]
    paths = [write(str(tmp_path / f"{i}.png"), im) for i, im in enumerate(images)]
    with tf.Graph().as_default() as other:  # like train.py calling it while building its own graph
        lr, hr = data.eval_pairs(paths, hr_size=32)
        assert not other.get_operations()
    assert lr.shape == (4, 8, 8, 3) and hr.shape == (4, 32, 32, 3) and lr.dtype == hr.dtype == np.float32
    np.testing.assert_allclose(hr, np.stack(images[:4])[:, 4:36, 9:41] / 127.5 - 1, atol=1e-6)
    lr2, hr2 = data.eval_pairs(paths, hr_size=32)
    np.testing.assert_array_equal(lr, lr2)
    np.testing.assert_array_equal(hr, hr2)


@pytest.mark.parametrize("hr_prep, size", [("resize", (40, 50)), ("crop", (20, 20))])
def test_eval_pairs_match_training(tmp_path, hr_prep, size):
    """Without randomness (a resize, or an upscaled image the crop covers whole) both give the same pair."""
    path = write(str(tmp_path / "x.png"), noise(*size))
    lr, hr = data.eval_pairs([path], hr_size=32, hr_prep=hr_prep)
    train_lr, train_hr, _ = take([path], 1, hr_size=32, hr_prep=hr_prep, flip=False)
    np.testing.assert_allclose(hr, train_hr, atol=1e-6)
    np.testing.assert_allclose(lr, train_lr, atol=1e-6)


@pytest.mark.parametrize("hr_prep, size", [("resize", (40, 50)), ("crop", (20, 24))])
def test_resampling_is_bicubic_like_pil(tmp_path, hr_prep, size):
    """HR resize/upscale and the LR downscale agree with PIL's antialiased bicubic (TF differs only at edges)."""
    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    lr, hr = data.eval_pairs([write(str(tmp_path / "x.png"), image)], hr_size=32, hr_prep=hr_prep)
    if hr_prep == "resize":
        big = Image.fromarray(image).resize((32, 32), Image.BICUBIC)
    else:  # short side upscaled to 32, then the centre crop
        scale = 32 / min(size)
        big = Image.fromarray(image).resize((round(size[1] * scale), round(size[0] * scale)), Image.BICUBIC)
    top, left = (big.height - 32) // 2, (big.width - 32) // 2
    expected_hr = np.array(big)[top:top + 32, left:left + 32].astype(int)
    assert np.abs(utils.to_uint8(hr[0]) - expected_hr).mean() < 0.5
    expected_lr = np.array(Image.fromarray(utils.to_uint8(hr[0])).resize((8, 8), Image.BICUBIC)).astype(int)
    assert np.abs(utils.to_uint8(lr[0]) - expected_lr).max() <= 1


def test_eval_pairs_unreadable(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="bad.jpg"):
        data.eval_pairs([str(path)], hr_size=16)


# ---------------------------------------------------------------- images out

def test_to_uint8():
    x = np.array([-2, -1, 0, 0.999, 1, 3], np.float32)
    np.testing.assert_array_equal(utils.to_uint8(x), [0, 0, 128, 255, 255, 255])
    assert utils.to_uint8(x).dtype == np.uint8


def test_save_grid(tmp_path):
    a, b, c = (rng.uniform(-1, 1, shape).astype(np.float32) for shape in [(8, 8, 3), (4, 6, 3), (8, 8, 3)])
    path = tmp_path / "new" / "dir" / "grid.png"
    utils.save_grid(str(path), [[a, b], np.stack([c])])
    grid = np.array(Image.open(path))
    assert grid.shape == (16, 16, 3)
    np.testing.assert_array_equal(grid[:8, :8], utils.to_uint8(a))
    np.testing.assert_array_equal(grid[:4, 8:14], utils.to_uint8(b))
    np.testing.assert_array_equal(grid[8:, :8], utils.to_uint8(c))
    assert not grid[4:8, 8:].any() and not grid[:, 14:].any() and not grid[8:, 8:].any()  # black padding
    utils.save_grid(str(path), [[c]])  # replaces the old grid
    assert np.array(Image.open(path)).shape == (8, 8, 3)
    assert os.listdir(path.parent) == ["grid.png"]


# ---------------------------------------------------------------- bad files

def solid(colour, size=(24, 24)):
    return np.full((*size, len(colour)), colour, np.uint8)


def bad_files(tmp):
    """{name: path} of files the pipeline must skip, one of each kind a scraped dataset holds."""
    good_jpeg = open(write(f"{tmp}/src.jpg", noise(40, 40)), "rb").read()
    good_png = open(write(f"{tmp}/src.png", noise(40, 40)), "rb").read()
    os.remove(f"{tmp}/src.jpg"), os.remove(f"{tmp}/src.png")
    bomb_header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    contents = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0 this is not really a jpeg",
        "truncated.jpg": good_jpeg[:len(good_jpeg) // 2],
        "truncated.png": good_png[:len(good_png) // 2],
        "empty.jpg": b"",
        "empty.png": b"",
        "text.png": b"<html>404 Not Found</html>",
        "gif.jpg": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "bomb.png": b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bomb_header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 99))
                    + png_chunk(b"IEND", b""),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = str(tmp / name)
        with open(paths[name], "wb") as f:
            f.write(content)
    paths["over-the-limit.png"] = write(f"{tmp}/over-the-limit.png", solid((9, 9, 9), (120, 120)))
    paths["thin.png"] = write(f"{tmp}/thin.png", solid((9, 9, 9), (1, 400)))  # 16 x 6400 once upscaled
    return paths


def good_files(tmp):
    """{path: the RGB colour training must see} of solid images in every mode that needs converting."""
    cmyk = Image.fromarray(solid((200, 40, 60))).convert("CMYK")
    palette = Image.fromarray(np.zeros((24, 24), np.uint8), "P")
    palette.putpalette([30, 160, 220] * 256)
    return {
        write(f"{tmp}/rgb.jpg", solid((250, 250, 10))): (250, 250, 10),
        write(f"{tmp}/cmyk.jpg", cmyk): (200, 40, 60),
        write(f"{tmp}/gray.jpg", solid((90,))): (90, 90, 90),
        write(f"{tmp}/rgba.png", solid((10, 200, 30, 0))): (10, 200, 30),
        write(f"{tmp}/palette.png", palette): (30, 160, 220),
        write_png16(f"{tmp}/deep.png", np.full((24, 24, 3), 0x80FF)): (128, 128, 128),
        write(f"{tmp}/tiny.png", solid((0, 0, 255), (3, 5))): (0, 0, 255),
        write(f"{tmp}/palette.bmp", palette): (30, 160, 220),
    }


def test_bad_files_are_replaced_and_counted_good_ones_converted(tmp_path):
    bad, good = bad_files(tmp_path), good_files(tmp_path)
    paths = sorted(list(bad.values()) + list(good))
    skipped = data.Skipped()
    _, hr, _ = take(paths, hr_size=16, shuffle=False, repeat=False, max_pixels=10_000, skipped=skipped)
    assert skipped.count == len(bad)
    take(paths, hr_size=16, shuffle=False, repeat=False, max_pixels=10_000, skipped=skipped)  # a second epoch
    assert skipped.count == len(bad)
    # one pair per file: a bad one's place goes to the next good file (cyclically)
    next_good = lambda i: next(paths[j % len(paths)] for j in range(i, i + len(paths)) if paths[j % len(paths)] in good)
    expected = [good[next_good(i)] for i in range(len(paths))]
    assert len(hr) == len(paths)
    np.testing.assert_allclose(utils.to_uint8(hr), np.broadcast_to(np.array(expected)[:, None, None], hr.shape), atol=3)

    kept, reasons = data.check_files(paths, max_bad_fraction=0.5, max_pixels=10_000)
    headers_fine = {bad["truncated.jpg"], bad["truncated.png"], bad["thin.png"]}  # only the pipeline finds them
    assert set(kept) == set(good) | headers_fine and len(reasons) == len(bad) - 3
    assert any("more than the limit of 10,000" in r for r in reasons)
    assert any("decompression bomb" in r for r in reasons)
    with pytest.raises(data.DataError, match="max-bad-fraction"):
        data.check_files(paths, max_bad_fraction=0.2)


def test_check_files_reads_a_bounded_sample(tmp_path, monkeypatch):
    good = write(str(tmp_path / "good.png"), noise(8, 8))
    bad = [str(tmp_path / f"bad{i}.png") for i in range(100)]
    for path in bad:
        open(path, "wb").close()
    paths = [good] * 900 + bad
    checked = []
    check_image = data.check_image
    monkeypatch.setattr(data, "check_image", lambda path, max_pixels: checked.append(path) or check_image(path, max_pixels))
    kept, reasons = data.check_files(paths, max_bad_fraction=0.2, sample=50, seed=1)
    assert len(checked) == 50 and 0 < len(reasons) < 20
    assert len(kept) == 1000 - len(reasons) and not set(kept) & {p for p in checked if p != good}
    with pytest.raises(data.DataError, match="100 of 1000 image files checked"):
        data.check_files(paths, max_bad_fraction=0.05, sample=5000)


def test_eval_pairs_skip_unreadable_images(tmp_path):
    bad = tmp_path / "0.jpg"
    bad.write_bytes(b"garbage")
    images = [noise(32, 32) for _ in range(2)]
    paths = [str(bad)] + [write(str(tmp_path / f"{i + 1}.png"), im) for i, im in enumerate(images)]
    _, hr = data.eval_pairs(paths, hr_size=32, count=4)
    np.testing.assert_allclose(hr, np.stack(images) / 127.5 - 1, atol=1e-6)


def test_the_stream_can_start_at_any_draw(tmp_path):
    paths = [write(str(tmp_path / f"{i}.png"), noise(24, 24)) for i in range(5)] + [str(tmp_path / "missing.png")]
    whole = take(paths, 12, hr_size=16, seed=3)[1]
    np.testing.assert_array_equal(take(paths, 5, hr_size=16, seed=3, start=7)[1], whole[7:])


PREFIXES = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"]


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=400))
def test_load_image_raises_only_data_errors(tmp_path_factory, prefix, body):
    path = tmp_path_factory.getbasetemp() / "fuzz.jpg"
    path.write_bytes(prefix + body)
    try:
        image = data.load_image(str(path), max_pixels=1_000_000)
    except data.DataError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=200, deadline=None)
@given(draws=st.data())
def test_load_image_on_damaged_real_images(tmp_path_factory, draws):
    """Real JPEG/PNG/BMP files with a few bytes overwritten: deeper into the decoders than random bytes get."""
    ext = draws.draw(st.sampled_from([".jpg", ".png", ".bmp"]))
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)  # the same every example
    original = bytearray(open(write(str(tmp_path_factory.getbasetemp() / f"src{ext}"), image), "rb").read())
    for _ in range(draws.draw(st.integers(1, 8))):
        original[draws.draw(st.integers(0, len(original) - 1))] = draws.draw(st.integers(0, 255))
    path = tmp_path_factory.getbasetemp() / f"fuzz{ext}"
    path.write_bytes(bytes(original[:draws.draw(st.integers(0, len(original)))]))
    try:
        image = data.load_image(str(path), max_pixels=1_000_000)
    except data.DataError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("cache_bytes, decodes", [(data.IMAGE_CACHE_BYTES, 3), (2 * 32 * 32 * 3, 2 + 4), (0, 12)])
def test_images_are_decoded_once_while_the_cache_has_room(tmp_path, monkeypatch, cache_bytes, decodes):
    paths = [write(str(tmp_path / f"{i}.png"), noise(32, 32)) for i in range(3)]
    uncached = take(paths, 12, hr_size=16, seed=3, cache_bytes=0)
    np.testing.assert_array_equal(take(paths, 12, hr_size=16, seed=3, cache_bytes=cache_bytes)[1], uncached[1])
    calls, load_image = [], data.load_image
    monkeypatch.setattr(data, "load_image", lambda *a: calls.append(a[0]) or load_image(*a))
    cache = data.ImageCache(cache_bytes)
    for draw in range(12):  # four epochs of three files
        np.testing.assert_array_equal(data._load_draw(paths, draw % 3, cache=cache), load_image(paths[draw % 3]))
    assert len(calls) == decodes
