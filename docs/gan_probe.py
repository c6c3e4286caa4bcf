"""What the adversarial phase does to a generator, checkpoint by checkpoint (docs/gan-phase.md).

    python docs/gan_probe.py runs/<name> [runs/<other> ...]

For every checkpoint of each run: PSNR (Y, shave 4) and VGG distance of the generator's output on
held-out photos (scikit-image's astronaut, chelsea, coffee and rocket; never Set5/Set14) and on
centre crops of the first 16 training images, each with batch norm on its moving averages (`ma`, as
inference runs it) and on each image's own statistics (`bs`, as training runs it). One JSON line a
checkpoint; bicubic's scores come first.
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import data  # noqa: E402
import metrics  # noqa: E402
import tflib  # noqa: E402
import utils  # noqa: E402
import vgg16  # noqa: E402
from model import SCALE, VGG_RESCALE, generator  # noqa: E402
from tflib import tf, tf1  # noqa: E402

HELD_OUT = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def checkpoints(run_dir):
    steps = sorted(int(p.split("-")[-1].split(".")[0]) for p in glob.glob(os.path.join(run_dir, "model.ckpt-*.index")))
    return [os.path.join(run_dir, f"model.ckpt-{step}") for step in steps]


def scores(outputs, targets, distance):
    """(mean PSNR, mean VGG distance) of uint8 outputs against their uint8 targets."""
    return (float(np.mean([metrics.sr_metrics(o, t, SCALE)[0] for o, t in zip(outputs, targets)])),
            float(np.mean([distance(o, t) for o, t in zip(outputs, targets)])))


def probe(run_dir, distance, held_out):
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = json.load(f)
    paths = data.list_images(cfg["dataset"], cfg["data_dir"])[:16]
    train_lr, train_hr = data.eval_pairs(paths, cfg["hr_size"], SCALE, cfg["hr_prep"], 16)
    train_hr = utils.to_uint8(train_hr)
    with tf.Graph().as_default(), tf1.Session() as sess:
        x = tf1.placeholder(tf.float32, [None, None, None, 3])
        modes = {"ma": generator(x, cfg["blocks"], training=False),
                 "bs": generator(x, cfg["blocks"], training=True, reuse=True)}
        saver = tf1.train.Saver(tf1.global_variables("generator/"))
        for checkpoint in checkpoints(run_dir):
            saver.restore(sess, checkpoint)
            row = {"run": os.path.basename(run_dir.rstrip("/")), "step": int(checkpoint.split("-")[-1])}
            for mode, sr in modes.items():
                outputs = [utils.to_uint8(sess.run(sr, {x: lr[None] / 127.5 - 1})[0]) for _, lr in held_out]
                row[f"held_out_psnr_{mode}"], row[f"held_out_vgg_{mode}"] = scores(
                    outputs, [hr for hr, _ in held_out], distance)
                row[f"train_psnr_{mode}"], row[f"train_vgg_{mode}"] = scores(
                    utils.to_uint8(sess.run(sr, {x: train_lr})), train_hr, distance)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


def main(argv=None):
    tflib.init_tf()
    runs = sys.argv[1:] if argv is None else argv
    if not runs:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    distance = vgg16.Distance(vgg16.resolve_weights(None), VGG_RESCALE)
    held_out = [metrics.bicubic_pair(data.load_image(os.path.join(data.sample_dir(), name)), SCALE) for name in HELD_OUT]
    bicubic = [metrics.imresize(lr, SCALE) for _, lr in held_out]
    psnr, vgg = scores(bicubic, [hr for hr, _ in held_out], distance)
    print(json.dumps({"run": "bicubic", "held_out_psnr": round(psnr, 4), "held_out_vgg": round(vgg, 4)}), flush=True)
    for run_dir in runs:
        probe(run_dir, distance, held_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
