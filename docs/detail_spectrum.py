"""Where a generator puts its finest detail: texture or a lattice (docs/gan-phase.md, round 17).

    python docs/detail_spectrum.py srresnet weights/srgan.npz runs/<name>/model.ckpt-<step> ...
    python docs/detail_spectrum.py --raw runs/<name>/model.ckpt-<step>   # its own weights, not their average

For each generator, on the eight held-out photos of `--val-set skimage8`: the power of the output's luma
in two bands of its 2-D spectrum, each as a ratio to the HR photo's own power there (the median over the
photos). The corner, both frequencies at least 0.4 cycles a pixel, is where a checkerboard or a period-2
stripe puts its power and natural photos put almost none; the ring, 0.2 to 0.4 cycles a pixel, holds
fine texture (fur, grass blades). A generator that paints texture raises the ring; one that paints a
lattice raises the corner.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import infer  # noqa: E402
import metrics  # noqa: E402
import tflib  # noqa: E402
import utils  # noqa: E402
import validation  # noqa: E402


def band_powers(image):
    """(corner power, ring power) of an RGB uint8 image's luma, less its mean."""
    y = metrics.rgb_to_y(image.astype(np.float64))
    power = np.abs(np.fft.fft2(y - y.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    radius = np.hypot(fx, fy)
    return np.array([power[(np.abs(fx) >= 0.4) & (np.abs(fy) >= 0.4)].sum(), power[(radius >= 0.2) & (radius < 0.4)].sum()])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="shipped names, .npz files, runs or checkpoints")
    p.add_argument("--raw", action="store_true", help="a run's or checkpoint's own generator weights, not their moving average")
    args = p.parse_args()
    tflib.init_tf()
    pairs = validation.load_pairs(validation.set_paths("skimage8"))
    hr_powers = [band_powers(hr) for hr, _ in pairs]
    for model in args.models:
        try:
            upscaler = infer.Upscaler(infer.resolve_model(model), average=not args.raw)
        except utils.CLIError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        ratios = np.array([band_powers(upscaler.upscale(lr)) / hr for (_, lr), hr in zip(pairs, hr_powers)])
        upscaler.close()
        print(f"{model}{' (raw)' if args.raw else ''}: corner {np.median(ratios[:, 0]):.3f}, "
              f"ring {np.median(ratios[:, 1]):.3f} of the HR's power")


if __name__ == "__main__":
    sys.exit(main())
