"""Train SRGAN as the report did: MSE pre-training of the generator, then adversarial training (k=1).

    python train.py --preset quick                       # the GAN phase in minutes on a CPU
    python train.py --dataset places --data-dir DIR      # the report's settings on Places-205
    python train.py --pretrain-only --name srresnet      # then: python train.py --name srresnet --resume
    python train.py --init-from srresnet --preset cpu    # the GAN phase from the shipped SRResNet

Everything goes to runs/<name>/: config.json, checkpoints, TensorBoard events, samples/*.png.
"""
import argparse
import glob
import json
import math
import os
import shutil
import signal
import sys
import time

from tqdm import tqdm

import data
import infer
import monitor
import rundir
import tflib
import utils
import validation
import vgg16
from model import (ADV_WEIGHT, CONTENT_LOSSES, D_AUGMENTS, D_HEADS, GAN_LOSSES, PHASES, PRECISIONS, SCALE, SRGAN,
                   TEXTURE_LAYERS, SRGANConfig)
from tflib import tf, tf1

# ----------------------------------------------------------------------------- configuration
# The defaults are the report's settings; a preset replaces some of them; flags override both.
DEFAULTS = dict(
    preset="report", dataset="sample", data_dir=None, name=None, runs_dir="runs",
    hr_size=256, hr_prep="crop", augment="", batch_size=1, blocks=16, precision="fp32", gan_update="alternating",
    content_loss="vgg", vgg_layer="conv5_3", vgg_before_relu=False, vgg_weights=None,
    learning_rate=1e-3, beta1=0.97, lr_decay=False,  # Adam(beta1=0.97) at TensorFlow's default rate
    pretrain_lr=None, warmup_iters=0, pretrain_schedule="constant",  # pre-training at learning_rate
    pretrain_iters=5000, gan_iters=20000, pretrain_only=False,
    save_every=1000, sample_every=500, summary_every=10, image_every=100, seed=0,
    max_pixels=data.MAX_PIXELS, max_bad_fraction=0.05,
    val_set="skimage2", val_dir=None, val_every=1000, keep_best=None,  # validation on photos left out of training
    # The GAN phase's levers, at the paper's setting:
    d_lr=None, real_label=1.0, gan_loss="standard", adv_weight=ADV_WEIGHT, pixel_weight=1.0, g_ema=0.0,
    d_warmup_iters=0, freeze_g_bn=False, grid_weight=0.0, texture_weight=0.0, d_augment="", d_head="dense",
    init_from=None,  # a new run's generator from a shipped or exported one: {"model", "path", "sha256"}
)
PRESETS = {
    "report": {},
    # The paper: 96x96 HR crops, batch 16, Adam(1e-4, 0.9), 1e6 SRResNet iterations, then 2e5
    # SRGAN iterations with the rate divided by 10 halfway.
    "paper": dict(hr_size=96, batch_size=16, learning_rate=1e-4, beta1=0.9, lr_decay=True,
                  pretrain_iters=1_000_000, gan_iters=200_000, save_every=5000, sample_every=5000, val_every=5000),
    # The GAN phase in a few minutes on 2 CPU cores: 60 gentle adversarial iterations from the shipped
    # SRResNet, on the sample photos. Pre-trained here from scratch in minutes, the generator was still
    # blurrier than bicubic, so a newcomer's first result looked broken. In bf16 where the CPU has it.
    "quick": dict(dataset="sample", init_from="srresnet", precision="auto", hr_size=96, batch_size=16,
                  learning_rate=3e-5, beta1=0.9, pretrain_iters=0, gan_iters=60, content_loss="mse+vgg",
                  freeze_g_bn=True, grid_weight=1000.0, save_every=30, sample_every=30, summary_every=5,
                  image_every=15, val_every=30),
    # SRResNet and SRGAN on 2 CPU cores (README, Results; docs/cpu-recipe.md, docs/gan-phase.md): the
    # paper's crops and batch; pre-training at 1e-3 after a warm-up, annealed to 0 along a cosine within
    # 2,500 steps (longer runs at these rates became unstable); a GAN phase at Adam(1e-4, 0.9) whose
    # generator is used through a moving average of its weights, with the MSE beside the VGG loss, G's
    # batch norm as inference runs it, and the grid loss; D at a tenth of G's rate, on one-sided smoothed
    # labels and DiffAugment'ed images, trained alone for its first 500 iterations.
    "cpu": dict(hr_size=96, batch_size=16, pretrain_lr=1e-3, warmup_iters=200, pretrain_schedule="cosine",
                learning_rate=1e-4, beta1=0.9, pretrain_iters=2500, gan_iters=1700, content_loss="mse+vgg",
                freeze_g_bn=True, grid_weight=1000.0, g_ema=0.995, d_lr=1e-5, real_label=0.9,
                d_augment="color,translation,cutout", d_warmup_iters=500, save_every=100, sample_every=400,
                summary_every=10, image_every=200, val_every=100, val_set="skimage8"),
}
# What a run of a preset can show, said when it ends.
PRESET_NOTES = {
    "quick": "note: the quick preset shows the GAN phase working (D and G, validation, checkpoints, TensorBoard) "
             "from the shipped SRResNet, not a trained SRGAN: 60 iterations change the generator little. "
             "The whole recipe, pre-training from scratch included, is --preset cpu (README, Results).",
}
NOT_RESUMED = ("preset", "pretrain_only", "name", "runs_dir")  # taken from this command line only

# alternating: the report's k = 1, a D update then a G update, each a sess.run on its own batch;
# fused: both updates from one forward pass of one batch (G's update does not see D's).
GAN_UPDATES = ("alternating", "fused")
PRETRAIN_SCHEDULES = ("constant", "cosine")


def batches_per_gan_iteration(gan_update):
    """Batches a GAN iteration takes from the input pipeline: one for D and one for G, or one shared."""
    return 2 if gan_update == "alternating" else 1


def steps_by_kind(cfg, step):
    """(pre-training steps, D warm-up iterations, GAN iterations) that make up the first `step` steps."""
    pretrain = min(step, cfg["pretrain_iters"])
    warmup = min(step - pretrain, cfg["d_warmup_iters"])
    return pretrain, warmup, step - pretrain - warmup


def generator_updates(cfg, step):
    """Updates the generator has had by `step`: none in D's warm-up."""
    pretrain, _, gan = steps_by_kind(cfg, step)
    return pretrain + gan


class ConfigError(Exception):
    pass


class TrainingError(Exception):
    pass


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved; args: (signal number, checkpoint)."""


def graph_flags():
    """The flags that shape the training graph, shared with bench.py (argparse parents=); unset ones are left out."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("the graph")
    g.add_argument("--hr-size", type=int, help="HR crop size; LR is a quarter of it (default 256)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--blocks", type=int, help="residual blocks in the generator (default 16)")
    g.add_argument("--precision", choices=(*PRECISIONS, "auto"), help="fp32 (default), bf16 (CPUs with "
                   "AVX512_BF16/AMX), mixed_float16 (GPUs), auto: bf16 on such a CPU without a GPU, else fp32")
    g.add_argument("--gan-update", choices=GAN_UPDATES, help="alternating (default, the report's) or fused: "
                                                              "D and G updated from one forward pass")
    g.add_argument("--content-loss", choices=CONTENT_LOSSES)
    g.add_argument("--vgg-layer", choices=vgg16.LAYERS)
    g.add_argument("--vgg-before-relu", action=argparse.BooleanOptionalAction,
                   help="compare the --vgg-layer features before its ReLU (ESRGAN), not after (default)")
    return p


def build_parser():
    p = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                             argument_default=argparse.SUPPRESS, parents=[graph_flags()])
    p.add_argument("--preset", choices=sorted(PRESETS), help="settings to start from (default: report)")
    p.add_argument("--dataset", choices=sorted(data.DATASETS), help="default: sample")
    p.add_argument("--data-dir", help="dataset folder (default: data/<dataset>)")
    p.add_argument("--name", help="run name: outputs go to <runs-dir>/<name> (default: dataset-preset-time)")
    p.add_argument("--runs-dir", help="default: runs")
    p.add_argument("--resume", action="store_true", help="continue the run <name> from its last checkpoint")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start a new run's generator (weights and batch-norm statistics) from srresnet or srgan, "
                        "the generators shipped in weights/, or a run directory, checkpoint, SavedModel or "
                        ".npz; the run then skips the pre-training and starts with the GAN phase, unless "
                        "--pretrain-iters is given")
    p.add_argument("--hr-prep", choices=data.HR_PREPS, help="random crop (default) or resize the whole image")
    p.add_argument("--augment", metavar="POLICY", help="more training pairs from few photos, as the T91 papers make "
                   "them: rot90 (random quarter turns of the crop; with the flip, all eight orientations), scale "
                   f"(each photo downscaled first by a random factor from 1 to {data.MIN_AUGMENT_SCALE}); "
                   "comma-separated (default none)")
    p.add_argument("--vgg-weights", help=".npz, Keras .h5 or vgg16.npy (default: weights/, fetched offline)")
    p.add_argument("--lr", dest="learning_rate", type=float)
    p.add_argument("--beta1", type=float)
    p.add_argument("--lr-decay", action=argparse.BooleanOptionalAction, help="divide the rate by 10 halfway through the GAN phase")
    p.add_argument("--pretrain-lr", type=float, help="the pre-training's rate (default: --lr)")
    p.add_argument("--warmup-iters", type=int, help="raise the pre-training's rate linearly over N steps (default 0)")
    p.add_argument("--pretrain-schedule", choices=PRETRAIN_SCHEDULES,
                   help="constant (default), or cosine: down to 0 along a half cosine by the end of the pre-training")
    p.add_argument("--d-lr", type=float, help="the discriminator's rate in the GAN phase, on the generator's "
                                               "schedule (TTUR; default: --lr)")
    p.add_argument("--real-label", type=float, help="the target of D(x) in D's loss: below 1 for one-sided label "
                                                    "smoothing, e.g. 0.9 (default 1)")
    p.add_argument("--d-augment", metavar="POLICY", help="DiffAugment: transform the discriminator's inputs, x and "
                   f"G(z) alike, so that it cannot memorize a small training set; some of {','.join(D_AUGMENTS)}, "
                   "comma-separated (default none)")
    p.add_argument("--d-head", choices=D_HEADS, help="dense (default, the paper's: one verdict per image) or patch: "
                   "one per 61x61 window, every 16 pixels (PatchGAN), so that texture is judged where it is")
    p.add_argument("--gan-loss", choices=GAN_LOSSES, help="standard (default, the paper's) or relativistic: "
                                                          "the relativistic average GAN loss (ESRGAN)")
    p.add_argument("--adv-weight", type=float, help=f"the adversarial loss's weight in G's loss; the VGG loss's is 1 "
                                                    f"(default {ADV_WEIGHT:g}, the paper's)")
    p.add_argument("--pixel-weight", type=float, help="the MSE's weight in the content loss of --content-loss mse "
                                                      "or mse+vgg (default 1)")
    p.add_argument("--g-ema", type=float, metavar="DECAY", help="keep a moving average of the generator's weights "
                   "through the GAN phase, e.g. 0.999, for the samples, validation, evaluate.py, infer.py and the "
                   "export (default 0: none)")
    p.add_argument("--freeze-g-bn", action=argparse.BooleanOptionalAction,
                   help="in the GAN phase, run the generator's batch norm on its pre-trained moving averages, not "
                        "updated: trained as inference runs it (default: batch statistics, the paper's)")
    p.add_argument("--grid-weight", type=float, help="weight of a grid loss in G's loss: the squared difference of "
                   "G(z)'s and x's detail averaged at each position of the 4-pixel grid, the fixed pattern the "
                   "sub-pixel steps can paint (default 0: none, the paper's)")
    p.add_argument("--texture-weight", type=float, help="weight of a texture loss in G's loss (EnhanceNet's): the "
                   "squared difference of G(z)'s and x's Gram matrices of VGG16 conv1_1, conv2_1 and conv3_1 "
                   "features over 16x16-pixel windows (default 0: none, the paper's)")
    p.add_argument("--pretrain-iters", type=int)
    p.add_argument("--gan-iters", type=int)
    p.add_argument("--d-warmup-iters", type=int, help="the first N GAN iterations update the discriminator alone, "
                                                       "the generator frozen (default 0)")
    p.add_argument("--pretrain-only", action="store_true", help="stop after the MSE pre-training")
    p.add_argument("--save-every", type=int, help="checkpoint every N iterations")
    p.add_argument("--sample-every", type=int, help="sample grid PNG every N iterations")
    p.add_argument("--summary-every", type=int, help="TensorBoard scalars every N iterations")
    p.add_argument("--image-every", type=int, help="TensorBoard images every N iterations")
    p.add_argument("--seed", type=int, help="seeds the weights, the data order and the crops (default 0)")
    p.add_argument("--max-pixels", type=int, help=f"skip images with more pixels (default {data.MAX_PIXELS:,})")
    p.add_argument("--max-bad-fraction", type=float,
                   help="stop before training if more of a sample of the files are unreadable (default 0.05)")
    p.add_argument("--val-set", choices=sorted(validation.VAL_SETS), help="scikit-image's photos to validate on, left "
                   f"out of training (default {DEFAULTS['val_set']}: {' and '.join(validation.VAL_SETS[DEFAULTS['val_set']])}; "
                   f"cpu {PRESETS['cpu']['val_set']})")
    p.add_argument("--val-dir", help="held-out images to validate on instead of --val-set's, left out of training")
    p.add_argument("--val-every", type=int, help="validate every N iterations (not in D's warm-up), 0 never (default 1000)")
    p.add_argument("--keep-best", choices=sorted(validation.BETTER),
                   help="keep the generator of the best validation by this score in <run>/best/")
    p.add_argument("--plot", metavar="RUN_DIR", help="only (re)draw the loss plots of RUN_DIR into RUN_DIR/plots")
    return p


def make_config(argv=None):
    """defaults <- preset <- (saved config.json when resuming) <- flags given on this command line."""
    flags = vars(build_parser().parse_args(argv))
    resume = flags.pop("resume", False)
    preset = flags.get("preset", DEFAULTS["preset"])
    cfg = dict(DEFAULTS, **PRESETS[preset], preset=preset)
    if resume:
        if "name" not in flags:
            raise ConfigError("--resume needs the --name of the run to continue")
        saved = os.path.join(flags.get("runs_dir", cfg["runs_dir"]), flags["name"], "config.json")
        if not os.path.isfile(saved):
            raise ConfigError(f"nothing to resume: {saved} does not exist")
        with open(saved) as f:
            cfg.update({k: v for k, v in json.load(f).items() if k in DEFAULTS and k not in NOT_RESUMED})
    cfg.update(flags)
    cfg["precision"] = tflib.resolve_precision(cfg["precision"])  # the run records what it ran with
    if "init_from" in flags or (isinstance(cfg["init_from"], str) and not resume):  # a flag, or a preset's name
        init_from(cfg, resume, pretrain_given="pretrain_iters" in flags)
    if cfg["name"] is None:
        cfg["name"] = f"{cfg['dataset']}-{cfg['preset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(cfg["runs_dir"], cfg["name"])
    if not resume and os.path.exists(run_dir):
        raise ConfigError(f"{run_dir} already exists: pass --resume to continue it, or choose another --name")
    check_config(cfg)
    return cfg, run_dir, resume


def init_from(cfg, resume, pretrain_given):
    """--init-from: cfg["init_from"] records the generator a new run starts from (as given, the file or checkpoint
    read, its sha256), a shipped one checked first; with it the pre-training is skipped unless --pretrain-iters
    says otherwise, as the shipped generators are trained already."""
    if resume:
        raise ConfigError("--init-from starts a new run; --resume continues one from its own checkpoint: pass one of them")
    model = cfg["init_from"]
    path, sha256 = infer.weights_source(infer.resolve_model(model))
    cfg["init_from"] = {"model": model, "path": path, "sha256": sha256}
    if not pretrain_given:
        cfg["pretrain_iters"] = 0


def check_config(cfg):
    if cfg["hr_size"] < 16 or cfg["hr_size"] % SCALE:
        raise ConfigError(f"--hr-size must be a multiple of {SCALE} and at least 16, not {cfg['hr_size']}")
    for key in ("batch_size", "blocks", "save_every", "sample_every", "summary_every", "image_every", "max_pixels"):
        if cfg[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, not {cfg[key]}")
    for key in ("pretrain_iters", "gan_iters", "warmup_iters", "val_every", "d_warmup_iters"):
        if cfg[key] < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must not be negative")
    for key, flag in (("learning_rate", "--lr"), ("pretrain_lr", "--pretrain-lr"), ("d_lr", "--d-lr")):
        if cfg[key] is not None and not cfg[key] > 0:
            raise ConfigError(f"{flag} must be positive, not {cfg[key]}")
    if not 0 <= cfg["beta1"] < 1:
        raise ConfigError(f"--beta1 must be in [0, 1), not {cfg['beta1']}")
    for key in ("adv_weight", "pixel_weight", "grid_weight", "texture_weight"):
        if cfg[key] < 0:
            raise ConfigError(f"--{key.replace('_', '-')} must not be negative")
    if cfg["pixel_weight"] != 1 and "mse" not in cfg["content_loss"]:
        raise ConfigError(f"--pixel-weight weights the MSE term, which --content-loss {cfg['content_loss']} "
                          "leaves out: add it with --content-loss mse+vgg")
    if cfg["vgg_before_relu"] and cfg["texture_weight"] and cfg["vgg_layer"] in TEXTURE_LAYERS:
        raise ConfigError(f"--vgg-before-relu with --vgg-layer {cfg['vgg_layer']} would give the texture loss that "
                          f"layer before its ReLU too: choose a --vgg-layer other than {', '.join(TEXTURE_LAYERS)}")
    if not 0 <= cfg["g_ema"] < 1:
        raise ConfigError(f"--g-ema must be in [0, 1), not {cfg['g_ema']}")
    for flag, given, known in (("--d-augment", cfg["d_augment"], D_AUGMENTS),
                               ("--augment", cfg["augment"], data.AUGMENTS)):
        unknown = set(policy(given)) - set(known)
        if unknown:
            raise ConfigError(f"{flag} takes some of {', '.join(known)}, comma-separated, not {', '.join(sorted(unknown))}")
    if "scale" in policy(cfg["augment"]) and cfg["hr_prep"] != "crop":
        raise ConfigError("--augment scale downscales the photo before the crop: it needs --hr-prep crop")
    if not 0 < cfg["real_label"] <= 1:
        raise ConfigError(f"--real-label must be in (0, 1], not {cfg['real_label']}")
    if not 0 <= cfg["max_bad_fraction"] <= 1:
        raise ConfigError("--max-bad-fraction must be in [0, 1]")
    if cfg["keep_best"] and not cfg["val_every"]:
        raise ConfigError("--keep-best needs validation: --val-every N with N > 0")


def model_config(cfg):
    """The SRGANConfig of a run's configuration."""
    return SRGANConfig(
        blocks=cfg["blocks"], content_loss=cfg["content_loss"], vgg_layer=cfg["vgg_layer"],
        vgg_before_relu=cfg["vgg_before_relu"],
        learning_rate=cfg["learning_rate"], beta1=cfg["beta1"],
        lr_decay_step=cfg["pretrain_iters"] + cfg["gan_iters"] // 2 if cfg["lr_decay"] else None,
        pretrain_lr=cfg["pretrain_lr"], warmup_iters=cfg["warmup_iters"],
        cosine_iters=cfg["pretrain_iters"] if cfg["pretrain_schedule"] == "cosine" else None,
        precision=cfg["precision"], fused_gan_step=cfg["gan_update"] == "fused", d_lr=cfg["d_lr"],
        real_label=cfg["real_label"], gan_loss=cfg["gan_loss"], adv_weight=cfg["adv_weight"],
        pixel_weight=cfg["pixel_weight"], g_ema=cfg["g_ema"], freeze_g_bn=cfg["freeze_g_bn"],
        grid_weight=cfg["grid_weight"], texture_weight=cfg["texture_weight"], d_augment=policy(cfg["d_augment"]),
        d_head=cfg["d_head"])


def policy(flag):
    """The transforms of an --augment or --d-augment policy ("color,translation", "" for none)."""
    return tuple(name for name in flag.split(",") if name)


# ----------------------------------------------------------------------------- training

class Trainer:
    """The session loop: one sess.run per pre-training step; per GAN iteration a D run then a G run
    (--gan-update alternating) or one run of both (fused)."""

    def __init__(self, cfg, run_dir):
        """Checks the data, the weights, the checkpoint to resume and the disk, then starts the session;
        writes nothing (open_writer does, once the run directory exists)."""
        self.cfg, self.run_dir = cfg, run_dir
        self.stop_signal, self.writer, self.best, self.validator = None, None, None, None
        paths, weights = self.check_inputs()
        checkpoint, kept, self.damaged = rundir.newest_intact_checkpoint(run_dir)
        self.build_graph(paths, rundir.checkpoint_step(checkpoint) if checkpoint else 0)
        rundir.check_free_space(run_dir, self.checkpoint_bytes, len(kept))
        self.start_session(weights)
        if checkpoint:
            self.restore(checkpoint, kept)
        elif cfg["init_from"]:
            self.init_generator(cfg["init_from"])
        if self.val_pairs:
            self.validator = validation.Validator(self.val_pairs, self.cfg["blocks"], weights)
            self.val_sources = self.validator.sources(self.graph)
            self.validated = None  # the step validated last

    def check_inputs(self):
        """(the usable training images, the VGG16 weights or None), the images of the sample grids, and
        the validation pairs (None without validation), whose files are left out of the training images."""
        cfg = self.cfg
        paths = data.list_images(cfg["dataset"], cfg["data_dir"])
        self.val_pairs = self.val_images = None
        if cfg["val_every"]:
            if cfg["val_dir"]:
                if not os.path.isdir(cfg["val_dir"]):
                    raise data.DataError(f"--val-dir {cfg['val_dir']} is not a directory")
                val_paths = data.list_images("folder", cfg["val_dir"], flag="--val-dir")
            else:
                val_paths = validation.set_paths(cfg["val_set"])
            held_out = {os.path.realpath(p) for p in val_paths}
            training = [p for p in paths if os.path.realpath(p) not in held_out]
            if not training:
                raise data.DataError("every training image is also a validation image: pass another --val-dir")
            self.val_pairs = validation.load_pairs(val_paths, cfg["max_pixels"])
            # Named by their path in --val-dir, so that two photos of one name in its tree stay two
            self.val_images = [os.path.relpath(p, cfg["val_dir"]) if cfg["val_dir"] else os.path.basename(p)
                               for p in val_paths]
            print(f"{len(val_paths)} validation images" + (f", {len(paths) - len(training)} of them left out of the "
                                                           "training images" if len(training) < len(paths) else ""))
            paths = training
        paths, bad = data.check_files(paths, cfg["max_bad_fraction"], cfg["max_pixels"], seed=cfg["seed"])
        needs_vgg = "vgg" in cfg["content_loss"] or cfg["texture_weight"] or cfg["val_every"]
        weights = vgg16.resolve_weights(cfg["vgg_weights"]) if needs_vgg else None
        self.eval_lr, self.eval_hr = data.eval_pairs(paths, cfg["hr_size"], SCALE, cfg["hr_prep"], 4, cfg["max_pixels"])
        print(f"{len(paths)} training images ({cfg['dataset']})" + (f"; left out {len(bad)} unreadable: {bad[0]}" if bad else ""))
        return paths, weights

    def build_graph(self, paths, start_step):
        """The finalized training graph: the input pipeline from where `start_step` left off, the model,
        one Saver of everything but VGG16, and a check that the weights are finite."""
        cfg = self.cfg
        self.skipped = data.Skipped()
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(cfg["seed"])
            with tf1.name_scope("data"):
                dataset = data.make_dataset(paths, cfg["hr_size"], SCALE, cfg["batch_size"], cfg["hr_prep"], seed=cfg["seed"],
                                            start=self.draws(start_step), max_pixels=cfg["max_pixels"], skipped=self.skipped,
                                            augment=policy(cfg["augment"]))
                lr, hr = tf1.data.make_one_shot_iterator(dataset).get_next()
            self.model = SRGAN(lr, hr, model_config(cfg))
            saved = self.model.saveable_variables()
            self.saver = tf1.train.Saver(saved, max_to_keep=2, save_relative_paths=True)  # a run directory can be copied or moved
            with tf1.name_scope("save/"):  # the check before each save, drawn in the Saver's box
                self.weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in saved
                                                     if v.dtype.base_dtype.is_floating], name="weights_finite")
                averages = {v.op.name for v in self.model.ema_shadows}  # --g-ema: for checkpoints saved without
                self.saver_without_averages = tf1.train.Saver([v for v in saved if v.op.name not in averages]) if averages else None
            self.init = tf1.global_variables_initializer()
            self.graph.finalize()
        self.checkpoint_bytes = sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in saved)

    def start_session(self, weights):
        """A session with freshly initialized variables and the VGG16 weights loaded."""
        self.sess = tf1.Session(graph=self.graph, config=tflib.session_config(self.cfg["precision"]))
        self.sess.run(self.init)
        if self.model.vgg is not None:
            self.model.vgg.load(self.sess, weights)

    def init_generator(self, source):
        """--init-from, before step 0: the generator's variables from `source` (cfg["init_from"]), which must have
        this run's --blocks; the moving average of its weights (--g-ema) starts from them."""
        weights = infer.generator_weights(source["path"])
        preset = self.cfg["preset"]
        chosen_by = f" (--preset {preset} starts from it)" if PRESETS[preset].get("init_from") == source["model"] else ""
        infer.check_architecture(source["path"] + chosen_by, {name: list(a.shape) for name, a in weights.items()},
                                 self.model.g_variables, self.cfg["blocks"], "this run's --blocks is")
        infer.assign(self.sess, self.model.g_variables, weights)
        if self.model.ema:
            self.sess.run(self.model.ema_reset)
        named = f" ({source['model']})" if source["model"] != source["path"] else ""
        print(f"the generator starts from {source['path']}{named}, sha256 {source['sha256']}")

    def open_writer(self):
        """The run's TensorBoard FileWriter, with the graph; the run directory must exist."""
        with self.graph.as_default():
            self.writer = tf1.summary.FileWriter(self.run_dir, self.graph)

    def restore(self, checkpoint, kept):
        """Loads `checkpoint`; the Saver takes over the `kept` ones, so that max_to_keep deletes them in turn.
        A checkpoint saved without --g-ema may lack the generator's moving averages and nothing else: they
        start from its weights."""
        saver = self.saver
        try:
            stored = {name for name, _ in tf.train.list_variables(checkpoint)}
            if self.model.ema_shadows and not stored & {v.op.name for v in self.model.ema_shadows}:
                saver = self.saver_without_averages
            saver.restore(self.sess, checkpoint)
        except tf.errors.OpError as e:
            raise ConfigError(f"{checkpoint} does not fit this graph (changed --blocks, --hr-size, --d-head or "
                              f"--content-loss?): {utils.first_line(e)}") from None
        if saver is not self.saver:
            self.sess.run(self.model.ema_reset)
            print(f"{checkpoint} holds no moving average of the generator's weights: --g-ema starts it from them")
        self.saver.recover_last_checkpoints(kept)
        for damaged, why in self.damaged.items():
            print(f"warning: {damaged} is damaged ({why})", file=sys.stderr)
        if self.damaged:
            folder = rundir.set_aside(self.run_dir, self.damaged, kept)
            print(f"resumed {checkpoint}, the newest intact checkpoint; the damaged files are kept in {folder}")
        else:
            print(f"resumed {checkpoint}")

    def step(self):
        return int(self.sess.run(self.model.global_step))

    def draws(self, step):
        """Files the input pipeline has handed out by `step`: a batch per pre-training step and per D warm-up
        iteration, two per alternating GAN iteration (one for D, one for G), one per fused one."""
        pretrain, warmup, gan = steps_by_kind(self.cfg, step)
        return self.cfg["batch_size"] * (pretrain + warmup + batches_per_gan_iteration(self.cfg["gan_update"]) * gan)

    def last_checkpoint(self):
        return tf1.train.latest_checkpoint(self.run_dir) or "none (start again without --resume)"

    def diverged(self, what):
        return TrainingError(f"{what}; the last good checkpoint is {self.last_checkpoint()}: lower --lr "
                             f"(now {self.cfg['learning_rate']:g}; --pretrain-lr in the pre-training) or check the data, then --resume")

    def save(self):
        """A checkpoint of the current step, or TrainingError leaving the last good one as it was: when the
        weights are not finite, or when writing fails (disk full), whose partial files are removed."""
        step = self.step()
        if not self.sess.run(self.weights_finite):
            raise self.diverged(f"the weights are not finite at step {step}, not saved")
        prefix = os.path.join(self.run_dir, f"model.ckpt-{step}")
        try:
            return self.saver.save(self.sess, os.path.join(self.run_dir, "model.ckpt"), global_step=step)
        except (tf.errors.OpError, OSError) as e:
            if tf1.train.latest_checkpoint(self.run_dir) != prefix:  # else only the .meta failed: keep it
                for path in glob.glob(prefix + ".*") + glob.glob(prefix + "_temp*"):
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            raise TrainingError(f"cannot save the checkpoint of step {step} ({utils.first_line(e)}); the last good one is "
                                f"{self.last_checkpoint()}: free some space, then --resume") from None

    def save_samples(self, tag):
        """HR on top, the generator's reconstruction below (the report's figures)."""
        sr = self.sess.run(self.model.sr_output, {self.model.lr_input: self.eval_lr})
        utils.save_grid(os.path.join(self.run_dir, "samples", f"{tag}_{self.step():07d}.png"), [self.eval_hr, sr])

    def due(self, step, every):
        return step % self.cfg[every] == 0

    def run(self, train_op, losses, summaries):
        """One sess.run: a training op, the losses to show, the summaries that are due."""
        _, losses, summaries = self.sess.run((train_op, losses, summaries))
        return losses, summaries

    def summaries(self, step, scalars, images):
        return [scalars] * self.due(step, "summary_every") + [images] * self.due(step, "image_every")

    def pretrain_step(self, step):
        m = self.model
        return self.run(m.pretrain_op, {"mse_loss": m.mse_loss}, self.summaries(step, m.pretrain_summary, m.image_summary))

    def gan_step(self, step):
        """k = 1: one discriminator update and one generator update; in the first d_warmup_iters iterations
        the discriminator's alone, each a step of its own (so a resume continues the warm-up where it stopped)."""
        m = self.model
        d_losses = {"d_loss": m.d_loss, "D_x": m.mean_Dx, "D_G_z": m.mean_Dg}
        g_losses = {"g_loss": m.g_loss, "adv_loss": m.adv_loss, "content_loss": m.content_loss}
        d_summaries = [m.d_summary] * self.due(step, "summary_every")
        if step < self.cfg["pretrain_iters"] + self.cfg["d_warmup_iters"]:
            return self.run(m.d_warmup_op, {**d_losses, "adv_loss": m.adv_loss}, d_summaries)
        g_summaries = self.summaries(step, m.g_summary, m.gan_image_summary)
        if self.cfg["gan_update"] == "fused":
            return self.run(m.gan_train_op, {**d_losses, **g_losses}, d_summaries + g_summaries)
        d_losses, d_summaries = self.run(m.d_train_op, d_losses, d_summaries)
        g_losses, g_summaries = self.run(m.g_train_op, g_losses, g_summaries)
        return {**d_losses, **g_losses}, d_summaries + g_summaries

    def run_phase(self, phase, start, end, step_fn):
        """Steps the global step from where it is up to `end`, then moves the phase on."""
        step = self.step()
        bar = tqdm(total=end - start, initial=min(max(step - start, 0), end - start), desc=PHASES[phase],
                   unit="it", dynamic_ncols=True, file=sys.stdout)
        health = monitor.GANHealth() if PHASES[phase] == "gan" else None
        while step < end:
            if self.stop_signal:
                raise Interrupted(self.stop_signal, self.save())
            losses, summaries = step_fn(step)
            step += 1
            for summary in summaries:
                self.writer.add_summary(summary, step)
            if health:
                self.report_health(health, losses, step)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise self.diverged(f"{bad[0]} became {losses[bad[0]]} at step {step}")
            shown = health.means() if health else losses
            bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()} | {"skipped": self.skipped.count}, refresh=False)
            bar.update()
            if self.due(step, "save_every"):
                self.save()
            if self.due(step, "sample_every"):
                self.save_samples(PHASES[phase])
            if self.validator and self.due(step, "val_every") and self.unvalidated(step):
                self.validate(step)
        bar.close()
        self.sess.run(self.model.next_phase)
        self.save()
        self.save_samples(PHASES[phase])
        if self.validator and self.unvalidated(step):
            self.validate(step)
        self.writer.flush()
        monitor.plot_training(self.run_dir)

    def report_health(self, health, losses, step):
        """Log when the GAN starts or stops looking unhealthy; TensorBoard scalar health/gan_ok (1 healthy, 0 not)."""
        before = health.problems
        problems = health.update(losses)
        if problems != before:
            tqdm.write(f"warning: at step {step} the GAN looks unhealthy: {'; '.join(problems)}" if problems
                       else f"at step {step} the GAN looks healthy again")
        if self.due(step - 1, "summary_every") or problems != before:  # at the same steps as the other scalars
            value = tf1.Summary.Value(tag="health/gan_ok", simple_value=float(not problems))
            self.writer.add_summary(tf1.Summary(value=[value]), step)

    def unvalidated(self, step):
        """Whether the generator at `step` differs from the one validated last (D's warm-up leaves it alone)."""
        return self.validated is None or generator_updates(self.cfg, step) != generator_updates(self.cfg, self.validated)

    def validate(self, step):
        """Scores the generator on the validation images (validation.py): to TensorBoard (val/..., and
        health/bn_ok 1 or 0), the log and val.jsonl; keeps the best generator (--keep-best); warns when
        batch norm's moving averages have drifted from what the network learnt."""
        scores = self.validator(self.sess.run(self.val_sources))
        self.validated = step
        drifted = scores["bn_gap_db"] > validation.DRIFT_DB
        values = [tf1.Summary.Value(tag=f"val/{name}", simple_value=value) for name, value in scores.items()]
        values.append(tf1.Summary.Value(tag="health/bn_ok", simple_value=float(not drifted)))
        self.writer.add_summary(tf1.Summary(value=values), step)
        with open(os.path.join(self.run_dir, "val.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, **scores, "images": self.val_images}) + "\n")
        tqdm.write(f"validation at step {step}: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}, "
                   f"VGG distance {scores['vgg']:.4f}, NIQE {scores['niqe']:.2f}, grid {scores['grid']:.2f}")
        if drifted:
            tqdm.write(f"warning: at step {step} batch norm's moving averages have drifted: the generator as users "
                       f"run it scores {scores['psnr']:.2f} dB on the validation images, {scores['psnr_batch_stats']:.2f} dB "
                       "with each image's own statistics")
        metric = self.cfg["keep_best"]
        if self.best and self.best.better(scores[metric]):
            try:
                self.best.keep(self.validator, step, scores[metric], self.cfg)
            except (tf.errors.OpError, OSError) as e:
                reason = (getattr(e, "message", None) or str(e)).splitlines()[0]
                raise TrainingError(f"cannot save the best generator of step {step} in {self.best.dir} ({reason}); "
                                    f"the last good checkpoint is {self.last_checkpoint()}: free some space, then --resume") from None

    def on_signal(self, signum, frame):
        """The first SIGINT/SIGTERM stops training before the next step, with a checkpoint; a second quits."""
        if self.stop_signal:
            raise KeyboardInterrupt
        self.stop_signal = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step (again to quit without)",
              file=sys.stderr, flush=True)

    def train(self):
        cfg = self.cfg
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.on_signal)
        self.open_writer()
        if cfg["keep_best"]:
            self.best = validation.BestGenerator(self.run_dir, cfg["keep_best"], self.val_images,
                                                 validation.pixels_sha256(self.val_pairs))
        pretrain_end = cfg["pretrain_iters"]
        if self.sess.run(self.model.phase) == 0:
            self.run_phase(0, 0, pretrain_end, self.pretrain_step)
        if cfg["pretrain_only"]:
            return
        gan_end = pretrain_end + cfg["gan_iters"]
        if self.sess.run(self.model.phase) == 2 and self.step() < gan_end:  # a finished run given a larger --gan-iters
            tqdm.write(f"the GAN phase ended at step {self.step()}: going on to step {gan_end}")
            tflib.set_variables(self.sess, {self.model.phase: 1})
        if self.sess.run(self.model.phase) == 1:
            self.run_phase(1, pretrain_end, gan_end, self.gan_step)

    def close(self):
        if self.writer:
            self.writer.close()
        if self.validator:
            self.validator.close()
        self.sess.close()


def plot_run(run_dir):
    """python train.py --plot RUN_DIR: redraw the loss plots from the run's TensorBoard files."""
    paths = monitor.plot_training(run_dir) if os.path.isdir(run_dir) else []
    if not paths:
        print(f"error: no TensorBoard scalars to plot in {run_dir}", file=sys.stderr)
        return 1
    print(f"plots written: {', '.join(paths)}")
    return 0


def main(argv=None):
    tflib.init_tf()
    utils.printable_output()
    plot = getattr(build_parser().parse_args(argv), "plot", None)
    if plot:
        return plot_run(plot)
    try:
        cfg, run_dir, resume = make_config(argv)
        print(json.dumps(cfg, indent=2))
        if resume:
            rundir.lock_run(run_dir)  # before reading its checkpoints, which another training could be rotating
        trainer = Trainer(cfg, run_dir)  # checks the data and the weights first; writes nothing
        os.makedirs(run_dir, exist_ok=resume)
        if not resume:
            rundir.lock_run(run_dir)
        utils.write_json(os.path.join(run_dir, "config.json"), cfg)
        try:
            trainer.train()
        except Interrupted as e:
            signum, checkpoint = e.args
            print(f"{signal.Signals(signum).name}: saved {checkpoint}; continue with --name {cfg['name']} --resume")
            return 128 + signum
        except KeyboardInterrupt:
            print(f"interrupted: the last checkpoint is {trainer.last_checkpoint()}", file=sys.stderr)
            return 128 + signal.SIGINT
        finally:
            trainer.close()
    except KeyboardInterrupt:
        print("interrupted before training started", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ConfigError, TrainingError, utils.CLIError, data.DataError, vgg16.WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: checkpoints, TensorBoard events and sample grids are in {run_dir}/ "
          f"(view with: tensorboard --logdir {cfg['runs_dir']})")
    if cfg["preset"] in PRESET_NOTES:
        print(PRESET_NOTES[cfg["preset"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
