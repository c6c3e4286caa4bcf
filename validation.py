"""Validation during training: the generator, as users run it, scored on held-out images every
--val-every steps (train.py writes the scores to TensorBoard as val/..., to the log and to
<run>/val.jsonl).

The held-out set is --val-dir's images, or else --val-set's photos that ship with scikit-image (never
Set5 or Set14, which are for the final table); train.py leaves them out of the training set. Each is
centre-cropped to at most CROP x CROP and paired with its MATLAB-bicubic LR as evaluate.py does, so
the scores are evaluate.py's, on these crops: PSNR, SSIM, VGG distance, NIQE; and grid, the strength of a
pattern repeating every 4 pixels (metrics.grid_energy), the GAN phase's usual artifact.

The generator also runs with batch norm on each image's own statistics. When that scores far better
than the moving averages users run, the averages have drifted from what the network learnt (a
collapse only inference shows); `bn_gap_db` measures it and DRIFT_DB is the line for a warning.
--keep-best keeps the generator of the best validation by one score in <run>/best/ (BestGenerator).
"""
import glob
import hashlib
import json
import math
import os
import shutil

import numpy as np

import data
import metrics
import niqe
import tflib
import utils
import vgg16
from model import EMA, SCALE, VGG_RESCALE, generator
from tflib import tf, tf1

# --val-set: photos in data.sample_dir(), none of them in T91, Places or Set5/Set14. Two score quickly;
# eight (a face, metal, foliage, stones, brick beside the two) give a steadier NIQE, for the CPU recipe.
VAL_SETS = {
    "skimage2": ("chelsea.png", "coffee.png"),  # fur, and a table top
    "skimage8": ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "grass.png",
                 "gravel.png", "brick.png"),
}
CROP = 296  # HR side: 3 x 3 of NIQE's 96x96 blocks after the 4-pixel shave, LR 74 x 74
DRIFT_DB = 3.0  # PSNR by which the batch-statistics generator may beat the moving-average one
SCORES = ("psnr", "ssim", "vgg", "niqe", "grid", "psnr_batch_stats")
BETTER = {"psnr": max, "niqe": min, "vgg": min}  # the --keep-best choices, and which way is better


def set_paths(name):
    """The files of --val-set `name`."""
    return [os.path.join(data.sample_dir(), image) for image in VAL_SETS[name]]


def load_pairs(paths, max_pixels=data.MAX_PIXELS):
    """[(hr, lr)] uint8: each image's centre crop of at most CROP x CROP, cropped to a multiple of SCALE,
    and its MATLAB-bicubic LR; DataError for an image that cannot be read or is too small."""
    pairs = []
    for path in paths:
        image = data.load_image(path, max_pixels)
        h, w = image.shape[:2]
        if min(h, w) < 4 * SCALE:
            raise data.DataError(f"validation image {path} is {w}x{h}: it needs at least {4 * SCALE} pixels a side")
        top, left = max(h - CROP, 0) // 2, max(w - CROP, 0) // 2
        pairs.append(metrics.bicubic_pair(image[top:top + CROP, left:left + CROP], SCALE))
    return pairs


def pixels_sha256(pairs):
    """The identity of a validation set: the sha256 of its HR crops' shapes and pixels, in order."""
    digest = hashlib.sha256()
    for hr, _ in pairs:
        digest.update(repr(hr.shape).encode() + hr.tobytes())
    return digest.hexdigest()


class Validator:
    """A graph and session of its own: the generator built twice on one set of variables, with batch norm
    on its moving averages (as infer.py builds it) and on each image's own statistics (its moving-average
    updates are never run). Each call copies the weights in from the training session."""

    def __init__(self, pairs, blocks, vgg_weights):
        self.pairs = pairs
        self.vgg = vgg16.Distance(vgg_weights, VGG_RESCALE)
        self.hr_features = [self.vgg.features(hr) for hr, _ in pairs]
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.lr = tf1.placeholder(tf.float32, [None, None, None, 3])
            self.sr = generator(self.lr, blocks, training=False)
            self.sr_batch_stats = generator(self.lr, blocks, training=True, reuse=True)
            self.variables = tf1.global_variables()
            with tf1.name_scope("copy"):
                self.feeds = [tf1.placeholder(v.dtype.base_dtype, v.shape) for v in self.variables]
                self.copy = tf.group(*[v.assign(feed) for v, feed in zip(self.variables, self.feeds)])
            self.saver = tf1.train.Saver(self.variables, max_to_keep=None, save_relative_paths=True)
        self.graph.finalize()
        self.sess = tf1.Session(graph=self.graph, config=tflib.session_config())
        # oneDNN runs a batch of one with filters it may not assume fixed as a GEMM: on one core, validation took
        # minutes an image (docs/performance.md). Two copies of the image keep its own batch statistics.
        self.copies = 2 if tflib.onednn_enabled() else 1

    def sources(self, graph):
        """The variables of the training `graph` to copy in, in order: each weight's moving average when it
        has one (--g-ema), as infer.py restores them."""
        by_name = {v.op.name: v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
        return [by_name.get(v.op.name + "/" + EMA, by_name[v.op.name]) for v in self.variables]

    def __call__(self, values):
        """{score: mean over the images} of the generator whose variables hold `values` (sources' order),
        and bn_gap_db: PSNR with batch statistics minus PSNR with the moving averages."""
        self.sess.run(self.copy, dict(zip(self.feeds, values)))
        rows = []
        for (hr, lr), hr_features in zip(self.pairs, self.hr_features):
            sr, sr_batch_stats = (utils.to_uint8(out[0]) for out in
                                  self.sess.run((self.sr, self.sr_batch_stats),
                                                {self.lr: np.repeat(lr[None] / 127.5 - 1, self.copies, axis=0)}))
            rows.append((*metrics.sr_metrics(sr, hr, SCALE), self.vgg.distance(hr_features, sr), niqe.sr_niqe(sr, SCALE),
                         metrics.grid_energy(sr, SCALE),
                         metrics.sr_metrics(sr_batch_stats, hr, SCALE)[0]))
        scores = {name: metrics.average(column) for name, column in zip(SCORES, zip(*rows))}
        scores["bn_gap_db"] = scores["psnr_batch_stats"] - scores["psnr"]
        return scores

    def close(self):
        self.sess.close()
        self.vgg.close()


class BestGenerator:
    """<run>/best/: the generator (a checkpoint of its variables alone) of the best validation by
    `metric` on the photos `images` (whose pixels_sha256 is `pixels`), the run's config.json, and
    best.json saying the metric, value, photos, step and checkpoint, so that evaluate.py and infer.py
    take --checkpoint <run>/best.
    best.json is written last, atomically, and names only complete checkpoints; the files of any other
    are removed, those of a save a stop interrupted included."""

    def __init__(self, run_dir, metric, images, pixels):
        self.dir, self.metric = os.path.join(run_dir, "best"), metric
        self.identity = {"metric": metric, "images": list(images), "pixels_sha256": pixels}  # what a record must match
        path = os.path.join(self.dir, "best.json")
        self.record = None
        if os.path.isfile(path):
            with open(path) as f:
                self.record = json.load(f)
            tf1.train.update_checkpoint_state(self.dir, self.record["checkpoint"])
            self.remove_others()

    def better(self, value):
        """Whether `value` of this metric beats the kept generator (always, if it was kept by another metric
        or on other photos, whether by name or by pixels: two --val-dir folders may hold different photos
        of the same names)."""
        if math.isnan(value):
            return False
        if self.record is None or {k: self.record.get(k) for k in self.identity} != self.identity:
            return True
        return value != self.record["value"] and BETTER[self.metric](value, self.record["value"]) == value

    def keep(self, validator, step, value, config):
        """Save the generator in `validator` (as last called) as the best, at `step`, with `value`."""
        os.makedirs(self.dir, exist_ok=True)
        try:
            prefix = validator.saver.save(validator.sess, os.path.join(self.dir, "model.ckpt"), global_step=step,
                                          write_meta_graph=False)
        except (tf.errors.OpError, OSError):
            self.remove_others()  # the partial files; the kept generator stays as it was
            raise
        utils.write_json(os.path.join(self.dir, "config.json"), config)
        self.record = {**self.identity, "value": value, "step": step, "checkpoint": os.path.basename(prefix)}
        utils.write_json(os.path.join(self.dir, "best.json"), self.record)
        self.remove_others()

    def remove_others(self):
        keep = self.record["checkpoint"] + "." if self.record else None
        for path in glob.glob(os.path.join(self.dir, "model.ckpt-*")):
            if not (keep and os.path.basename(path).startswith(keep)):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
