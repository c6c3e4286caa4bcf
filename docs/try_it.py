"""Draw docs/try_it.png, the README's "Try it" picture: a detail of a photo, bicubic | the shipped default
generator (infer.DEFAULT_MODEL) | HR.

    python docs/try_it.py
    python docs/try_it.py --model runs/NAME   # any generator infer.py takes

The photo is one of docs/figures.py's (scikit-image's, not training data of the CPU recipe), its
MATLAB-bicubic x4 downscale the input, drawn as the Results figures are: the detail zoomed, with each
column's PSNR on the whole photo.
"""
import argparse
import os
import sys

import figures  # docs/figures.py, beside this script; it puts the project on sys.path
import infer  # noqa: E402
import tflib  # noqa: E402
import utils  # noqa: E402
from PIL import ImageFont  # noqa: E402


def main(argv=None):
    parser = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=infer.DEFAULT_MODEL, help=f"the generator (default: the shipped {infer.DEFAULT_MODEL})")
    parser.add_argument("--photo", default="astronaut.png", choices=sorted(figures.DETAILS))
    parser.add_argument("--out", default=os.path.join(figures.DOCS, "try_it.png"))
    args = parser.parse_args(argv)
    tflib.init_tf()
    try:
        upscaler = infer.Upscaler(infer.resolve_model(args.model))
    except utils.CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shipped = infer.shipped_generators()
    label = shipped[args.model]["title"] if args.model in shipped else os.path.basename(args.model.rstrip("/"))
    figures.write_png(args.out, figures.comparison(args.photo, {label: upscaler}, ImageFont.load_default(size=18)))
    print("written", args.out)
    return 0


if __name__ == "__main__":
    tflib.assume_fixed_weights()
    sys.exit(main())
