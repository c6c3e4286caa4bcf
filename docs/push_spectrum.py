"""Where the losses push the generator: the spectrum of G's loss gradients by G(z) (docs/gan-phase.md, round 21).

    python docs/push_spectrum.py runs/<name>/model.ckpt-<step> ...   # or runs/<name>: its newest checkpoint

Each checkpoint's run (its config.json) rebuilds its training graph, in fp32, fed with centre crops of its
first 16 training images. Printed per checkpoint: the norm of the gradient by G(z) of the adversarial
term (adv_weight x adv_loss: D's push on G) and of the content loss, and how each one's power (on the
channels' mean) splits by radial frequency, in cycles an HR pixel: below 1/8, what the x4 LR image
holds; 1/8 to 1/4, the octave above it, where most of the texture a x4 generator paints lives; 1/4 to
1/2, the finest octave, where natural photos hold least power and grain and lattices most; and the
corners beyond 1/2 (diagonal only).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import data  # noqa: E402
import infer  # noqa: E402
import tflib  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
import vgg16  # noqa: E402
from model import SRGAN  # noqa: E402

tf1 = tf.compat.v1
BANDS = (("lr", 0, 1 / 8), ("octave", 1 / 8, 1 / 4), ("finest", 1 / 4, 1 / 2), ("corners", 1 / 2, 1))


def band_fractions(images):
    """{band: fraction of the power} of [N, H, W, C] images' channel mean, each image less its mean."""
    grey = images.mean(-1)
    power = np.abs(np.fft.fft2(grey - grey.mean((1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(grey.shape[1]), np.fft.fftfreq(grey.shape[2]), indexing="ij")
    radius = np.hypot(fy, fx)
    return {name: float(power[:, (radius >= low) & (radius < high)].sum() / power.sum()) for name, low, high in BANDS}


def pushes(checkpoint, run_config, count=16):
    """{"adversarial": the gradient of adv_weight x adv_loss by G(z), "content": the content loss's} at
    `checkpoint` of the run configured by `run_config`, on centre crops of its first `count` training images."""
    cfg = {**train.DEFAULTS, **{k: v for k, v in run_config.items() if k in train.DEFAULTS}, "precision": "fp32"}
    lr, hr = data.eval_pairs(data.list_images(cfg["dataset"], cfg["data_dir"]), cfg["hr_size"], count=count)
    graph = tf.Graph()
    with graph.as_default():
        lr_input, hr_input = tf1.placeholder(tf.float32, lr.shape), tf1.placeholder(tf.float32, hr.shape)
        model = SRGAN(lr_input, hr_input, train.model_config(cfg))
        grads = {"adversarial": tf.gradients(model.config.adv_weight * model.adv_loss, model.Gz)[0],
                 "content": tf.gradients(model.content_loss, model.Gz)[0]}
        saver = tf1.train.Saver(model.saveable_variables())
    with tf1.Session(graph=graph, config=tflib.session_config("fp32")) as sess:
        saver.restore(sess, checkpoint)
        if model.vgg is not None:
            model.vgg.load(sess, vgg16.resolve_weights(cfg["vgg_weights"]))
        return sess.run(grads, {lr_input: lr, hr_input: hr})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="runs/<name>/model.ckpt-<step>, or runs/<name>")
    args = p.parse_args()
    tflib.init_tf()
    try:
        runs = [infer.run_config(path) for path in args.checkpoints]
    except utils.CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for checkpoint, run_config in runs:
        try:
            grads = pushes(checkpoint, run_config)
        except data.DataError as e:
            print(f"error: {checkpoint}: {e}", file=sys.stderr)
            return 1
        for name, grad in grads.items():
            bands = ", ".join(f"{band} {fraction:.3f}" for band, fraction in band_fractions(grad).items())
            print(f"{checkpoint}: {name} push {np.sqrt(np.sum(np.square(grad))):.5g}; {bands}")


if __name__ == "__main__":
    sys.exit(main())
