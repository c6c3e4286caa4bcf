"""Where a generator puts its finest detail: texture or a lattice (docs/gan-phase.md, round 17).

    python docs/detail_spectrum.py srresnet weights/srgan.npz runs/<name>/model.ckpt-<step> ...
    python docs/detail_spectrum.py --raw runs/<name>/model.ckpt-<step>   # its own weights, not their average

For each generator, on the eight held-out photos of `--val-set skimage8`: the power of the output's luma
in two bands of its 2-D spectrum, each as a ratio to the HR photo's own power there (the median over the
photos). The corner, both frequencies at least 0.4 cycles a pixel, is where a checkerboard or a period-2
stripe puts its power and natural photos put almost none; the ring, 0.2 to 0.4 cycles a pixel, holds
fine texture (fur, grass blades). A generator that paints texture raises the ring; one that paints a
lattice raises the corner. The third number is the chroma's (Cb and Cr) power above 0.2 cycles a pixel
as a ratio to the HR's luma power there (three of the photos are grey: no chroma to compare with); the
HR photos' own is printed first. Colour speckle and colour fringes raise it (round 19).
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
    """(corner power, ring power, power above 0.2 cycles a pixel) of an RGB uint8 image's luma, and its
    chroma's power above 0.2 cycles a pixel; each channel less its mean."""
    rgb = image.astype(np.float64)
    y = metrics.rgb_to_y(rgb)
    cb, cr = (rgb @ np.array(weights) / 255 for weights in ([-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]))
    luma, chroma = (sum(np.abs(np.fft.fft2(c - c.mean())) ** 2 for c in channels) for channels in ([y], [cb, cr]))
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    radius = np.hypot(fx, fy)
    return np.array([luma[(np.abs(fx) >= 0.4) & (np.abs(fy) >= 0.4)].sum(), luma[(radius >= 0.2) & (radius < 0.4)].sum(),
                     luma[radius >= 0.2].sum(), chroma[radius >= 0.2].sum()])


def ratios(powers, hr_powers):
    """The corner's and the ring's power as ratios to the HR's, and the chroma's as a ratio to the HR's
    luma above 0.2 cycles a pixel."""
    return np.array([powers[0] / hr_powers[0], powers[1] / hr_powers[1], powers[3] / hr_powers[2]])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="shipped names, .npz files, runs or checkpoints")
    p.add_argument("--raw", action="store_true", help="a run's or checkpoint's own generator weights, not their moving average")
    args = p.parse_args()
    tflib.init_tf()
    pairs = validation.load_pairs(validation.set_paths("skimage8"))
    hr_powers = [band_powers(hr) for hr, _ in pairs]
    print(f"HR: chroma {np.median([ratios(hr, hr)[2] for hr in hr_powers]):.3f}")
    for model in args.models:
        try:
            upscaler = infer.Upscaler(infer.resolve_model(model), average=not args.raw)
        except utils.CLIError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        corner, ring, chroma = np.median([ratios(band_powers(upscaler.upscale(lr)), hr)
                                          for (_, lr), hr in zip(pairs, hr_powers)], axis=0)
        upscaler.close()
        print(f"{model}{' (raw)' if args.raw else ''}: corner {corner:.3f}, ring {ring:.3f} of the HR's power; "
              f"chroma {chroma:.3f}")


if __name__ == "__main__":
    sys.exit(main())
