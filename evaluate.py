"""Evaluate a generator the way the SR papers' tables do, beside bicubic and the SRGAN paper's numbers.

    python evaluate.py --checkpoint runs/NAME --data ../shared/data/Set5/HR ../shared/data/Set14/HR
    python evaluate.py --model srgan --data ../shared/data/Set5/HR ../shared/data/Set14/HR   # a shipped generator

Per test set: PSNR (dB) and SSIM on the luma (ITU-R BT.601) with 4 pixels shaved from each border,
LR made with MATLAB's bicubic imresize from HR cropped to a multiple of 4 (see metrics.py), averaged
per image; and, since the paper's MOS cannot be repeated, a perceptual distance: the mean squared
difference of ImageNet VGG16 conv5_3 features of SR and HR (x 1/12.75, the content loss's scale;
lower is better), and NIQE, which needs no reference (niqe.py: the authors' pristine model, on the
rounded luma with the same 4-pixel shave; lower is more natural), also of the HR images themselves as
the target; it is averaged over the images with at least two whole 96x96 blocks after the shave (all
of Set5 and Set14). The table goes to stdout and to eval-<step>.json / .md in the run directory (for an
.npz, eval-<name>.json / .md beside it), which keep the rows of other sets evaluated there before with
the same weights.
--save-images writes each SR image and an LR | bicubic | SR | HR strip with zoomed crops there too.
"""
import argparse
import json
import math
import os
import sys

from tqdm import tqdm

import data
import infer
import metrics
import niqe
import tflib
import utils
import vgg16
from model import SCALE, VGG_RESCALE
from utils import CLIError

# SRGAN paper (Ledig et al. 2017), Table 2: x4 PSNR / SSIM.
PAPER = {
    "Set5": {"bicubic": (28.43, 0.8211), "SRResNet": (32.05, 0.9019), "SRGAN": (29.40, 0.8472)},
    "Set14": {"bicubic": (25.99, 0.7486), "SRResNet": (28.49, 0.8184), "SRGAN": (26.02, 0.7397)},
    "BSD100": {"bicubic": (25.94, 0.6935), "SRResNet": (27.58, 0.7620), "SRGAN": (25.16, 0.6688)},
}
COLUMNS = ("bicubic", "model")
METRICS = ("psnr", "ssim", "vgg", "niqe")


def set_name(folder):
    """Set5 for .../Set5/HR, Set5 for .../Set5."""
    folder = os.path.normpath(folder)
    name = os.path.basename(folder)
    return os.path.basename(os.path.dirname(folder)) if name.upper() == "HR" else name


def row_names(folders):
    """{row name: folder}: set_name, with -2, -3, ... added when folders share it, so their rows stay apart."""
    names = {}
    for folder in folders:
        name, count = set_name(folder), 1
        while name in names:
            count += 1
            name = f"{set_name(folder)}-{count}"
        names[name] = folder
    return names


def check_set(folder):
    """The images of `folder`, else DataError: none, or one too small to score (cropped to a multiple of
    SCALE, with SCALE pixels shaved from each border, it must still hold SSIM's window)."""
    least = SCALE * math.ceil((2 * SCALE + metrics.SSIM_WINDOW) / SCALE)
    paths = data.list_images("folder", folder, flag="--data")
    for path in paths:
        width, height = data.check_image(path)
        if min(width, height) < least:
            raise data.DataError(f"image {path} is {width}x{height}: too small to evaluate, which needs at least "
                                 f"{least} pixels a side ({SCALE} shaved from each border, SSIM's "
                                 f"{metrics.SSIM_WINDOW}x{metrics.SSIM_WINDOW} window)")
    return paths


def evaluate_set(upscaler, vgg, name, paths, saved=None):
    """{"bicubic"|"model": {"psnr", "ssim", "vgg", "niqe"}, "hr": {"niqe"}, "images": count}, scores averaged
    over the images at `paths`, the set `name`, a progress bar on stderr counting them; with `saved` ({path:
    where its SR goes, ending in _sr.png}) the SR images and comparison strips are written."""
    scores = {column: [] for column in COLUMNS}
    hr_niqe = []
    for path in tqdm(paths, desc=name, unit="image", dynamic_ncols=True):
        hr, lr = metrics.bicubic_pair(data.load_image(path), SCALE)
        bicubic = metrics.imresize(lr, SCALE)
        sr = upscaler.upscale(lr)
        for column, image in zip(COLUMNS, (bicubic, sr)):
            scores[column].append((*metrics.sr_metrics(image, hr, SCALE), vgg(image, hr), niqe.sr_niqe(image, SCALE)))
        hr_niqe.append(niqe.sr_niqe(hr, SCALE))
        if saved:
            utils.write_png(saved[path], sr)
            utils.save_comparison(saved[path].removesuffix("_sr.png") + "_strip.png", lr, bicubic, sr, hr)
    means = {column: {metric: metrics.average(values) for metric, values in zip(METRICS, zip(*rows))} for column, rows in scores.items()}
    return dict(means, hr={"niqe": metrics.average(hr_niqe)}, images=len(paths))


def markdown(results, title):
    """The results as a Markdown table, with the paper's numbers for the sets it reports."""
    lines = [f"# {title}", "",
             "| set | images | bicubic PSNR / SSIM / VGG / NIQE | model PSNR / SSIM / VGG / NIQE | HR NIQE "
             "| paper bicubic | paper SRResNet | paper SRGAN |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        ours = [f"{r[c]['psnr']:.2f} / {r[c]['ssim']:.4f} / {r[c]['vgg']:.4f} / {r[c]['niqe']:.2f}" for c in COLUMNS]
        paper = [f"{p:.2f} / {s:.4f}" for p, s in PAPER.get(set_name(r["folder"]), {}).values()] or ["-"] * 3
        lines.append(f"| {name} | {r['images']} | {' | '.join(ours)} | {r['hr']['niqe']:.2f} | {' | '.join(paper)} |")
    return "\n".join(lines) + "\n"


def with_earlier_sets(path, checkpoint, sha256, results):
    """`results` after the sets of the evaluation of the same weights already in `path`, if any, so that
    evaluating another test set adds a row instead of dropping the table's others (a set of the same
    name is replaced)."""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):  # none yet, or unreadable: nothing to keep
        return results
    same = earlier.get("checkpoint") == checkpoint and earlier.get("sha256", sha256) == sha256  # (older files: no sha256)
    return {**earlier.get("sets", {}), **results} if same else results


def build_parser():
    p = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--checkpoint", required=True,
                   help="srgan or srresnet, the generators shipped in weights/, or a run directory, checkpoint "
                        "prefix, SavedModel or exported .npz")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="test sets: folders of HR images")
    p.add_argument("--save-images", action="store_true", help="keep the SR images and comparison strips")
    p.add_argument("--vgg-weights", help="VGG16 weights for the perceptual distance (default: weights/)")
    p.add_argument("--out-dir", help="where results go (default: the run directory)")
    return p


def main(argv=None):
    tflib.init_tf()
    utils.printable_output()
    args = build_parser().parse_args(argv)
    utils.stop_on_signals()
    try:
        sets = {name: (folder, check_set(folder)) for name, folder in row_names(args.data).items()}  # before the slow part
        if args.out_dir:
            utils.check_folder(args.out_dir, "--out-dir")
        upscaler = infer.Upscaler(infer.resolve_model(args.model))
        vgg = vgg16.Distance(vgg16.resolve_weights(args.vgg_weights), VGG_RESCALE)
        checkpoint = upscaler.checkpoint.rstrip("/")
        _, sha256 = infer.weights_source(checkpoint)
        out_dir = args.out_dir or (checkpoint if upscaler.saved_model else os.path.dirname(checkpoint))
        tag = f"eval-{os.path.basename(checkpoint).replace('model.ckpt-', '').removesuffix('.npz')}"
        saved = {name: utils.output_paths([(folder, p) for p in paths], os.path.join(out_dir, tag, name), "_sr.png")
                 for name, (folder, paths) in sets.items()} if args.save_images else {}
        results = {name: dict(evaluate_set(upscaler, vgg, name, paths, saved.get(name)), folder=folder)
                   for name, (folder, paths) in sets.items()}
        print(markdown(results, f"x{SCALE} evaluation of {checkpoint}"))
        results = with_earlier_sets(os.path.join(out_dir, tag + ".json"), checkpoint, sha256, results)
        table = markdown(results, f"x{SCALE} evaluation of {checkpoint}")
        os.makedirs(out_dir, exist_ok=True)
        summary = json.dumps({"checkpoint": checkpoint, "sha256": sha256, "sets": results, "paper": PAPER}, indent=2)
        utils.write_atomic(os.path.join(out_dir, tag + ".md"), lambda f: f.write(table.encode()))
        utils.write_atomic(os.path.join(out_dir, tag + ".json"), lambda f: f.write(summary.encode()))
        kept = [name for name in results if name not in sets]
        print(f"written to {os.path.join(out_dir, tag)}.md and .json"
              + (f", after the rows of {', '.join(kept)} from before" if kept else ""))
    except (CLIError, data.DataError, vgg16.WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except utils.Stopped as e:
        return utils.report_stop(e)
    return 0


if __name__ == "__main__":
    tflib.assume_fixed_weights()
    sys.exit(main())
