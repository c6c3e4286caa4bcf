"""Super-resolve images x4 with a trained generator, or export it as a SavedModel or a compact .npz.

    python infer.py photo.jpg folder/ -o out/                        # the shipped SRResNet: out/photo_x4.png, ...
    python infer.py --model runs/NAME photo.jpg -o out/               # a run of your own (--checkpoint: the same)
    python infer.py --model runs/NAME --export srgan_savedmodel       # the generator alone, as a SavedModel
    python infer.py --model runs/NAME --export-generator weights/mine.npz   # its inference weights alone (6 MB)

Any size (large images go through in overlapping tiles, blended, so memory stays bounded), JPEG, PNG
or BMP; grayscale stays grayscale, RGBA keeps its alpha (upscaled bicubically), 16-bit PNGs give
16-bit PNGs. Outputs are PNGs, written to a temporary file then renamed, never over an existing file
unless --overwrite.
"""
import argparse
import glob
import os
import shutil
import sys
import zipfile

import numpy as np
from tqdm import tqdm

import data
import metrics
import tflib
import utils
from model import EMA, SCALE, generator
from tflib import tf, tf1
from utils import CLIError

SERVE = [tf1.saved_model.tag_constants.SERVING]
FLOAT_SIGNATURE, UINT8_SIGNATURE = "serving_default", "uint8"
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")  # the shipped generators and their cards
SHIPPED = "generators.json"  # in WEIGHTS: {name: {"file", "sha256", the model card's fields}}
DEFAULT_MODEL = "srgan"  # the shipped generator infer.py runs without --model
BLOCKS_KEY = "blocks"  # in an exported .npz, beside the generator's variables (all named generator/...)

# ----------------------------------------------------------------------------- the shipped generators

def shipped_generators():
    """{name: entry} of WEIGHTS/generators.json, else CLIError."""
    return utils.read_json(os.path.join(WEIGHTS, SHIPPED), "which lists the shipped generators")


def resolve_model(model):
    """The path of the generator `model` names: a shipped generator's name (srresnet, srgan) its .npz in WEIGHTS
    once its sha256 is the one generators.json records, else CLIError; anything else as it is, a path. The
    names win, so that a folder named srgan in the working directory never replaces the default model: it
    is ./srgan."""
    try:
        shipped = shipped_generators()
    except CLIError:
        if os.path.exists(model):  # a path of the user's own needs no list of the shipped generators
            return model
        raise
    if model not in shipped:
        return model  # the loader says there is no such run, checkpoint or file
    path = os.path.join(WEIGHTS, shipped[model]["file"])
    expected = shipped[model]["sha256"]
    if not expected:
        raise CLIError(f"the {model} generator is not shipped yet ({SHIPPED} has no sha256 for {path}): pass --model "
                       "with a run directory, checkpoint or .npz of your own")
    if not os.path.isfile(path):
        raise CLIError(f"{path}, the shipped {model} generator, is missing: restore it (git checkout -- weights/), "
                       "or pass --model with a run directory, checkpoint or .npz of your own")
    digest = utils.sha256_file(path)
    if digest != expected:
        raise CLIError(f"{path} is damaged or replaced: its sha256 is {digest}, {SHIPPED} says {expected}; "
                       "restore it (git checkout -- weights/)")
    return path


def weights_source(path):
    """(what the generator at `path` is read from: the .npz, SavedModel or checkpoint prefix, a run directory's
    newest; the sha256 of its files, those of a checkpoint or SavedModel taken in name order), else CLIError."""
    if os.path.isfile(path):
        return path, utils.sha256_file(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        source, files = path, sorted(glob.glob(os.path.join(path, "variables", "*")))
    else:
        source = run_config(path)[0]
        files = sorted(f for f in glob.glob(glob.escape(source) + ".*") if not f.endswith(".meta"))
    return source, utils.sha256_file(*files)


# ----------------------------------------------------------------------------- the generator

def run_config(path):
    """(newest checkpoint, the run's config.json) of a run directory or a checkpoint prefix, else CLIError."""
    if os.path.isdir(path):
        run_dir, checkpoint = path, tf1.train.latest_checkpoint(path)
        if checkpoint is None:
            raise CLIError(f"{path} holds no checkpoint (model.ckpt-*); train first with train.py or pass a SavedModel")
    elif os.path.exists(path + ".index"):
        run_dir, checkpoint = os.path.dirname(path) or ".", path
    else:
        raise CLIError(f"no such run directory, checkpoint or SavedModel: {path}")
    return checkpoint, utils.read_json(os.path.join(run_dir, "config.json"), "which says how to rebuild the generator")


def count_blocks(names):
    """The residual blocks of a generator whose variables have these names (generator/res<i>/...)."""
    return len({name.split("/")[1] for name in names if name.startswith("generator/res")})


def checkpoint_shapes(checkpoint):
    """{variable name: shape} of a checkpoint, else CLIError."""
    try:
        return dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise CLIError(f"cannot read checkpoint {checkpoint}: {utils.first_line(e)}") from None


def check_architecture(source, stored, variables, blocks, said="its config.json says"):
    """CLIError unless `stored` ({name: shape} of the weights in `source`) holds each of these generator
    variables, with `blocks` residual blocks (the number `said` gives, e.g. not another --blocks)."""
    stored_blocks = count_blocks(stored)
    if stored_blocks != blocks:
        raise CLIError(f"{source} has a generator with {stored_blocks} residual blocks, {said} {blocks}")
    for v in variables:
        if list(stored.get(v.op.name, ())) != v.shape.as_list():
            raise CLIError(f"{source} does not hold the generator variable {v.op.name} {v.shape.as_list()}")


def build_generator(blocks):
    """Into the default graph: float [-1, 1] and uint8 inputs [None, None, None, 3], their outputs, one generator."""
    lr_float = tf1.placeholder(tf.float32, [None, None, None, 3], name="lr_input")
    sr_float = tf.identity(generator(lr_float, blocks, training=False), name="sr_output")
    lr_uint8 = tf1.placeholder(tf.uint8, [None, None, None, 3], name="lr_uint8")
    with tf1.variable_scope(tf1.get_variable_scope(), reuse=True):
        sr = generator(tf.cast(lr_uint8, tf.float32) / 127.5 - 1, blocks, training=False)
    sr_uint8 = tf.cast(tf.round(tf.clip_by_value((sr + 1) * 127.5, 0, 255)), tf.uint8, name="sr_uint8")
    return {FLOAT_SIGNATURE: (lr_float, sr_float), UINT8_SIGNATURE: (lr_uint8, sr_uint8)}


def restore_generator(sess, path, average=True):
    """Build the generator into sess.graph from a run's config.json and restore it, each weight from its
    moving average when the checkpoint holds one (--g-ema) and `average`; returns (checkpoint, signatures)."""
    checkpoint, config = run_config(path)
    signatures = build_generator(config["blocks"])
    variables = tf1.global_variables()
    stored = checkpoint_shapes(checkpoint)
    check_architecture(checkpoint, stored, variables, config["blocks"])
    # A run trained with --g-ema: each weight from its moving average.
    names = {v.op.name + "/" + EMA if average and v.op.name + "/" + EMA in stored else v.op.name: v for v in variables}
    try:
        tf1.train.Saver(names).restore(sess, checkpoint)
    except tf.errors.OpError as e:
        raise CLIError(f"cannot restore {checkpoint}: {utils.first_line(e)}") from None
    return checkpoint, signatures


def read_npz(path):
    """({variable name: float32 array}, blocks) of a generator exported with --export-generator, else CLIError."""
    if os.path.isfile(path) and not zipfile.is_zipfile(path):  # else np.load reads it as a pickle and says so
        raise CLIError(f"cannot read the generator {path}: not a .npz (zip) archive")
    try:
        with np.load(path) as z:
            return {name: z[name] for name in z.files if name != BLOCKS_KEY}, int(z[BLOCKS_KEY])
    except Exception as e:  # np.load raises OSError, ValueError, KeyError, BadZipFile, EOFError..., by the damage
        raise CLIError(f"cannot read the generator {path}: {utils.first_line(e)}") from None


def assign(sess, variables, weights):
    """Set each variable to weights[its name]; adds no ops, so it works on a finalized graph and leaves no copy
    of the weights in it (nor in a SavedModel of it)."""
    tflib.set_variables(sess, {v: weights[v.op.name] for v in variables})


def load_generator(sess, path, average=True):
    """Build the generator into sess.graph and give it the weights of an exported .npz, or those of a run or
    checkpoint (restore_generator, `average` passed on); returns (the .npz or checkpoint, signatures)."""
    if not path.endswith(".npz"):
        return restore_generator(sess, path, average)
    weights, blocks = read_npz(path)
    signatures = build_generator(blocks)
    variables = tf1.global_variables()
    check_architecture(path, {name: list(a.shape) for name, a in weights.items()}, variables, blocks, "its 'blocks' says")
    assign(sess, variables, weights)
    return path, signatures


def export(path, out_dir):
    """Write the generator of a run (or checkpoint) as a SavedModel with float and uint8 signatures, atomically."""
    if os.path.exists(out_dir):
        raise CLIError(f"{out_dir} already exists; choose another --export directory")
    tmp = os.path.join(os.path.dirname(os.path.abspath(out_dir)), f".tmp-export-{os.getpid()}")
    try:
        with tf.Graph().as_default(), tf1.Session() as sess:
            _, signatures = load_generator(sess, path)
            builder = tf1.saved_model.Builder(tmp)
            builder.add_meta_graph_and_variables(
                sess, SERVE, strip_default_attrs=True,
                signature_def_map={name: tf1.saved_model.predict_signature_def({"lr": lr}, {"sr": sr})
                                   for name, (lr, sr) in signatures.items()})
            builder.save()
        os.replace(tmp, out_dir)
    except BaseException:  # a failure or a signal: no half-written export left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def generator_weights(path):
    """{variable name: float32 array} of the generator at `path` (run directory, checkpoint, SavedModel or .npz)
    as inference runs it: each weight's moving average when the run kept one (--g-ema), batch norm's moving
    statistics."""
    upscaler = Upscaler(path)
    try:
        return upscaler.weights()
    finally:
        upscaler.close()


def export_generator(path, out):
    """Write the generator at `path` as one .npz of its inference weights (float32 arrays by variable name, and
    `blocks`), atomically: the compact form of the shipped generators, 6 MB for 16 blocks."""
    weights = generator_weights(path)
    arrays = {name: np.asarray(a, np.float32) for name, a in weights.items()}
    utils.write_atomic(out, lambda f: np.savez(f, **arrays, **{BLOCKS_KEY: np.int32(count_blocks(weights))}))


class Upscaler:
    """A session holding the generator, from a training run, checkpoint or exported .npz, or from a SavedModel;
    average=False: a run's or checkpoint's own weights, not their moving average (--g-ema)."""

    def __init__(self, path, average=True):
        self.saved_model = os.path.isfile(os.path.join(path, "saved_model.pb"))
        if not average and (self.saved_model or path.endswith(".npz")):
            raise CLIError(f"{path} holds only the weights inference uses, not the generator's own: "
                           "give its run or checkpoint")
        self.graph = tf.Graph()
        self.sess = tf1.Session(graph=self.graph)
        with self.graph.as_default():
            if self.saved_model:
                try:
                    meta = tf1.saved_model.loader.load(self.sess, SERVE, path)
                except (tf.errors.OpError, RuntimeError, OSError) as e:
                    raise CLIError(f"cannot load the SavedModel {path}: {utils.first_line(e)}") from None
                signature = meta.signature_def[FLOAT_SIGNATURE]
                self.lr_input = self.graph.get_tensor_by_name(signature.inputs["lr"].name)
                self.sr_output = self.graph.get_tensor_by_name(signature.outputs["sr"].name)
                self.checkpoint = path
            else:
                self.checkpoint, signatures = load_generator(self.sess, path, average)
                self.lr_input, self.sr_output = signatures[FLOAT_SIGNATURE]
        self.graph.finalize()

    def weights(self):
        """{variable name: value} of the generator's variables."""
        with self.graph.as_default():
            return self.sess.run({v.op.name: v for v in tf1.global_variables()})

    def run(self, lr):
        """SR [h*4, w*4, 3] of one LR image [h, w, 3] in [-1, 1] in a single pass."""
        return self.sess.run(self.sr_output, {self.lr_input: lr[None]})[0]

    def bands(self, lr, tile=256, overlap=32):
        """Yield the SR of lr [h, w, 3] in [-1, 1] as bands of finished rows, top to bottom.

        The generator runs on tile x tile LR crops overlapping by `overlap`; each crop's output fades
        in and out linearly across the overlaps, so seams (where a crop lacked context) disappear and
        memory is bounded by one row of tiles. tile=0 runs the whole image at once.
        """
        h, w, _ = lr.shape
        tile = tile or max(h, w)
        rows, cols = spans(h, tile, overlap), spans(w, tile, overlap)
        total = np.zeros((0, w * SCALE, 3), np.float32)
        weight = np.zeros((0, w * SCALE, 1), np.float32)
        top = 0  # first SR row not yet yielded
        progress = tqdm(rows, desc="tile rows", unit="row", leave=False, disable=len(rows) * len(cols) < 16)
        for i, (y0, y1) in enumerate(progress):
            grow = y1 * SCALE - top - len(total)
            total = np.concatenate([total, np.zeros((grow, w * SCALE, 3), np.float32)])
            weight = np.concatenate([weight, np.zeros((grow, w * SCALE, 1), np.float32)])
            for x0, x1 in cols:
                fade = np.outer(ramp(y0, y1, h, overlap), ramp(x0, x1, w, overlap))[:, :, None]
                band = np.s_[y0 * SCALE - top:y1 * SCALE - top, x0 * SCALE:x1 * SCALE]
                total[band] += fade * self.run(lr[y0:y1, x0:x1])
                weight[band] += fade
            done = rows[i + 1][0] * SCALE - top if i + 1 < len(rows) else len(total)
            yield total[:done] / weight[:done]
            total, weight, top = total[done:], weight[done:], top + done

    def upscale(self, pixels, tile=256, overlap=32):
        """x4 SR of an image as read_image gives it ([h, w, c] uint8 or uint16, c = 1..4), same dtype and channels."""
        peak = np.iinfo(pixels.dtype).max
        color = pixels[:, :, :3] if pixels.shape[2] >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
        out = np.empty((pixels.shape[0] * SCALE, pixels.shape[1] * SCALE, pixels.shape[2]), pixels.dtype)
        top = 0
        for band in self.bands(color.astype(np.float32) * (2 / peak) - 1, tile, overlap):
            if pixels.shape[2] < 3:
                band = band.mean(axis=2, keepdims=True)  # grayscale in, grayscale out
            band += 1  # in place from here on: a band of a large image is hundreds of MB
            band *= peak / 2
            out[top:top + len(band), :, :band.shape[2]] = np.clip(np.round(band, out=band), 0, peak, out=band)
            top += len(band)
        if pixels.shape[2] in (2, 4):  # alpha: MATLAB bicubic, not the network
            alpha = metrics.imresize(pixels[:, :, -1].astype(np.float32), SCALE)
            out[:, :, -1] = np.clip(np.round(alpha), 0, peak)
        return out

    def close(self):
        self.sess.close()


def spans(length, tile, overlap):
    """[(start, stop)] of tiles of size `tile` covering [0, length), neighbours overlapping by at least `overlap`."""
    if length <= tile:
        return [(0, length)]
    starts = list(range(0, length - tile, tile - overlap)) + [length - tile]
    return [(start, start + tile) for start in starts]


def ramp(start, stop, length, overlap):
    """SR-resolution blending weights of one tile along one axis: linear fades over the overlaps inside the image."""
    weights = np.ones((stop - start) * SCALE, np.float32)
    half = overlap * SCALE // 2  # the outer half only gives context: its pixels lack it themselves
    fade = np.concatenate([np.zeros(half, np.float32), (np.arange(overlap * SCALE - half, dtype=np.float32) + 0.5) / (overlap * SCALE - half)])
    if start > 0 and overlap:
        weights[:len(fade)] = fade
    if stop < length and overlap:
        weights[len(weights) - len(fade):] = fade[::-1]
    return weights


# ----------------------------------------------------------------------------- files

def read_image(path):
    """[h, w, c] uint8, or uint16 for 16-bit PNGs, upright; c is 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)."""
    return data.read_image(path, full_depth=True)


def input_files(inputs):
    """(folder, image file) of the files named, each in its own folder, and of those found under the folders
    named, else CLIError."""
    files = []
    for path in inputs:
        if os.path.isdir(path):
            files += [(path, found) for found in data.list_images("folder", path, flag=None)]
        elif os.path.isfile(path):
            files.append((os.path.dirname(path), path))
        else:
            raise CLIError(f"no such file or folder: {path}")
    return files


# ----------------------------------------------------------------------------- command line

def build_parser():
    p = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--checkpoint", default=DEFAULT_MODEL,
                   help="srgan (default) or srresnet, the generators shipped in weights/ (their sha256 checked "
                        "against weights/generators.json), or a run directory, checkpoint prefix, SavedModel or "
                        "exported .npz (./srgan for one named like a shipped generator)")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--out-dir", help="where the <name>_x4.png files go")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--tile", type=int, default=256, help="LR tile size (default 256; 0: the whole image at once)")
    p.add_argument("--overlap", type=int, default=32, help="LR pixels neighbouring tiles share (default 32)")
    p.add_argument("--export", metavar="DIR", help="write the generator as a SavedModel to DIR")
    p.add_argument("--export-generator", metavar="FILE.npz", help="write the generator's inference weights (the "
                   "moving averages of a --g-ema run, batch norm's statistics) as one .npz, as weights/ ships them")
    return p


def check_args(args):
    if not args.inputs and not args.export and not args.export_generator:
        raise CLIError("nothing to do: give INPUT images with -o OUTDIR, --export DIR or --export-generator FILE.npz")
    if args.inputs and not args.out_dir:
        raise CLIError("say where the outputs go with -o OUTDIR")
    if args.tile < 0 or (args.tile and not 0 <= 2 * args.overlap < args.tile):
        raise CLIError("--tile must be 0 (no tiling) or more than twice --overlap, which must not be negative")
    if args.out_dir:
        utils.check_folder(args.out_dir, "-o")
    if args.export:
        utils.check_folder(os.path.dirname(os.path.abspath(args.export)), "--export")
    if args.export_generator:
        if not args.export_generator.endswith(".npz"):
            raise CLIError(f"--export-generator {args.export_generator}: the file name must end in .npz")
        if os.path.exists(args.export_generator) and not args.overwrite:
            raise CLIError(f"{args.export_generator} already exists; pass --overwrite to replace it")
        utils.check_folder(os.path.dirname(os.path.abspath(args.export_generator)), "--export-generator")


def main(argv=None):
    tflib.init_tf()
    utils.printable_output()
    args = build_parser().parse_args(argv)
    utils.stop_on_signals()
    try:
        check_args(args)
        outputs = utils.output_paths(input_files(args.inputs), args.out_dir or "", "_x4.png")
        model = resolve_model(args.model)
        if args.export:
            if os.path.isfile(os.path.join(model, "saved_model.pb")):
                raise CLIError(f"{model} is already a SavedModel")
            export(model, args.export)
            print(f"exported the generator to {args.export}")
        if args.export_generator:
            export_generator(model, args.export_generator)
            print(f"exported the generator's weights to {args.export_generator}")
        if not outputs:
            return 0
        upscaler = Upscaler(model)
        try:
            for path, out in outputs.items():
                if os.path.exists(out) and not args.overwrite:
                    raise CLIError(f"{out} already exists; pass --overwrite to replace it")
                utils.write_png(out, upscaler.upscale(read_image(path), args.tile, args.overlap))
                print(f"{path} -> {out}")
        finally:
            upscaler.close()
    except (CLIError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except utils.Stopped as e:
        return utils.report_stop(e)
    return 0


if __name__ == "__main__":
    tflib.assume_fixed_weights()
    sys.exit(main())
