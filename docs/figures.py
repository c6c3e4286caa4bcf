"""Draw the README's Results figures from a pre-trained (SRResNet) and an adversarial (SRGAN) generator.

    python docs/figures.py --srresnet runs/cpu-srresnet --srgan runs/cpu-srgan

For a few of the photos bundled with scikit-image (none is training data for the CPU recipe): the
photo cropped to a multiple of 4 is the HR image, its MATLAB-bicubic x4 downscale the LR input, and
docs/compare_<photo>.png shows a detail of bicubic | SRResNet | SRGAN | HR, zoomed, with each one's
PSNR (Y channel, shave 4) on the whole photo. The runs' loss plots are copied to docs/loss_*.png.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

import data  # noqa: E402
import infer  # noqa: E402
import metrics  # noqa: E402
import monitor  # noqa: E402
import tflib  # noqa: E402
import utils  # noqa: E402
from model import SCALE  # noqa: E402

DOCS = os.path.dirname(os.path.abspath(__file__))
# photo: (top, left, size) of the HR detail shown
DETAILS = {"astronaut.png": (40, 170, 128), "chelsea.png": (60, 110, 128), "coffee.png": (220, 300, 128),
           "rocket.jpg": (120, 0, 128)}
ZOOM = 3
PLOTS = {"srresnet": ["mse_loss"], "srgan": ["content_loss", "adv_loss", "d_loss", "D_outputs", "validation"]}


def labelled(image, text, font):
    """The uint8 image with a caption strip below it."""
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + 28), "white")
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text((6, image.shape[0] + 4), text, fill="black", font=font)
    return np.asarray(canvas)


def comparison(photo, upscalers, font):
    """The labelled row of zoomed details: bicubic, each upscaler's SR, HR."""
    hr, lr = metrics.bicubic_pair(data.load_image(os.path.join(data.sample_dir(), photo)), SCALE)
    columns = [("bicubic", metrics.imresize(lr, SCALE))] + [(name, up.upscale(lr)) for name, up in upscalers.items()]
    top, left, size = DETAILS[photo]
    crop = np.s_[top:top + size, left:left + size]
    zoom = lambda x: np.repeat(np.repeat(x[crop], ZOOM, 0), ZOOM, 1)
    row = [labelled(zoom(sr), f"{name}  {metrics.sr_metrics(sr, hr, SCALE)[0]:.2f} dB", font) for name, sr in columns]
    row.append(labelled(zoom(hr), "HR", font))
    gap = np.full((row[0].shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([part for image in row for part in (image, gap)][:-1], axis=1)


def write_png(path, pixels):
    utils.write_atomic(path, lambda f: Image.fromarray(pixels).save(f, format="PNG", optimize=True))


def main(argv=None):
    parser = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--srresnet", required=True, help="run directory, checkpoint or SavedModel of the MSE generator")
    parser.add_argument("--srgan", required=True, help="run directory, checkpoint or SavedModel of the SRGAN generator")
    parser.add_argument("--out-dir", default=DOCS)
    args = parser.parse_args(argv)
    tflib.init_tf()
    try:
        upscalers = {"SRResNet": infer.Upscaler(args.srresnet), "SRGAN": infer.Upscaler(args.srgan)}
    except utils.CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    font = ImageFont.load_default(size=18)
    for photo in DETAILS:
        path = os.path.join(args.out_dir, f"compare_{os.path.splitext(photo)[0]}.png")
        write_png(path, comparison(photo, upscalers, font))
        print("written", path)
    for run, tags in PLOTS.items():
        run_dir = getattr(args, run)
        run_dir = run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir)
        monitor.plot_training(run_dir)
        for tag in tags:
            source, path = os.path.join(run_dir, "plots", tag + ".png"), os.path.join(args.out_dir, f"loss_{tag}.png")
            if os.path.isfile(source):
                with open(source, "rb") as f:
                    plot = f.read()
                utils.write_atomic(path, lambda f: f.write(plot))
                print("written", path)
    return 0


if __name__ == "__main__":
    tflib.assume_fixed_weights()
    sys.exit(main())
