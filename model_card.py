"""Record a shipped generator in weights/generators.json and write the model cards, weights/<name>.md, from it.

    python infer.py --model runs/cpu-srgan --export-generator weights/srgan.npz
    python evaluate.py --checkpoint weights/srgan.npz --data ../shared/data/Set5/HR ../shared/data/Set14/HR
    python model_card.py srgan --run runs/cpu-srgan --commit COMMIT --command "python train.py ..."

records the .npz's sha256 and residual blocks, the run's seed, data and training wall time (the time
spanned by each of its TensorBoard files, summed: every session of a resumed run, none of the pauses),
the Set5 and Set14 rows of evaluate.py's weights/eval-<name>.json, the command and the commit the run
was trained with; then rewrites every card from generators.json, which is the one place the numbers
live. `python model_card.py` alone rewrites the cards (after editing a title or a description).
"""
import argparse
import glob
import os
import sys

import infer
import tflib
import utils
from tflib import tf, tf1
from utils import CLIError

EVAL_SETS = ("Set5", "Set14")
DATA = "../shared/data"  # where the README's commands find the test sets
EVAL_COLUMNS = ("bicubic", "model")


def wall_time(run_dir):
    """Seconds of training in run_dir: each TensorBoard file's first to last event, summed over the files (one
    per session, so the pauses between the sessions of a resumed run are left out)."""
    total = 0.0
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        times = []
        try:
            times = [event.wall_time for event in tf1.train.summary_iterator(path)]
        except tf.errors.DataLossError:  # a half-written last record: read up to there
            pass
        total += max(times) - min(times) if times else 0
    return total


def duration(seconds):
    """'1 h 05 min', '33 min'."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def record(entry, run_dir, eval_path, command, commit):
    """The fields of a generators.json entry for its .npz, trained by `command` at `commit` in run_dir and
    scored by evaluate.py into eval_path."""
    path = os.path.join(infer.WEIGHTS, entry["file"])
    if not os.path.isfile(path):
        raise CLIError(f"{path} does not exist: export it first (python infer.py --model RUN --export-generator {path})")
    _, blocks = infer.read_npz(path)
    config = utils.read_json(os.path.join(run_dir, "config.json"), "the run's configuration")
    sets = utils.read_json(eval_path, "evaluate.py's scores of the generator")["sets"]
    missing = [name for name in EVAL_SETS if name not in sets]
    if missing:
        raise CLIError(f"{eval_path} has no {' or '.join(missing)} row: evaluate.py --checkpoint {path} --data "
                       + " ".join(f"{DATA}/{name}/HR" for name in EVAL_SETS))
    return dict(
        sha256=utils.sha256_file(path), blocks=blocks, command=command, seed=config["seed"], commit=commit,
        data=config["dataset"] + (f" ({config['data_dir']})" if config["data_dir"] else ""),
        wall_time=duration(wall_time(run_dir)),
        eval={name: {column: sets[name][column] for column in EVAL_COLUMNS} for name in EVAL_SETS})


def scores(row):
    return f"{row['psnr']:.2f} / {row['ssim']:.4f} / {row['vgg']:.4f} / {row['niqe']:.2f}"


def card(name, entry):
    """The Markdown model card of the shipped generator `name`, from its generators.json entry."""
    def field(value, code=False):
        return "not recorded yet" if value is None else f"`{value}`" if code else str(value)

    path = f"weights/{entry['file']}"
    lines = [f"# {entry['title']}: `{path}`", "", entry["description"], "",
             "The SRResNet generator's inference weights, x4: each weight's moving average when the run kept one",
             "(`--g-ema`), batch norm's moving statistics; float32 arrays named as the generator's variables.", ""]
    if not entry["sha256"]:
        lines += ["Not shipped yet: the file is exported from a finished run and recorded here by `model_card.py`",
                  "(weights/README.md says how).", ""]
    lines += ["| | |", "| --- | --- |",
              f"| sha256 | {field(entry['sha256'], True)} |",
              f"| residual blocks | {field(entry['blocks'])} |",
              f"| trained with | {field(entry['command'], True)} |",
              f"| seed | {field(entry['seed'])} |",
              f"| commit | {field(entry['commit'], True)} |",
              f"| data | {field(entry['data'])} |",
              f"| training wall time | {field(entry['wall_time'])} |", ""]
    if entry["eval"]:
        lines += ["x4, PSNR (dB) / SSIM on the Y channel with 4 pixels shaved / VGG16 distance / NIQE (README, Evaluation):",
                  "", "| set | bicubic | this generator |", "| --- | --- | --- |"]
        lines += [f"| {s} | {scores(rows['bicubic'])} | {scores(rows['model'])} |" for s, rows in entry["eval"].items()]
        lines.append("")
    data = " ".join(f"{DATA}/{s}/HR" for s in EVAL_SETS)
    lines += ["Use it, score it, train on from it:", "", "```sh",
              f"python infer.py --model {name} photo.jpg -o out/",
              f"python evaluate.py --model {name} --data {data}",
              f"python train.py --init-from {name} --preset cpu --dataset folder --data-dir DIR", "```", ""]
    return "\n".join(lines)


def card_path(entry):
    return os.path.join(infer.WEIGHTS, os.path.splitext(entry["file"])[0] + ".md")


def build_parser():
    p = utils.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="the shipped generator to record (a name in weights/generators.json)")
    p.add_argument("--run", help="the run directory it was exported from")
    p.add_argument("--eval", help="evaluate.py's scores of the .npz (default: weights/eval-<name>.json)")
    p.add_argument("--commit", help="the commit the run was trained at")
    p.add_argument("--command", help="the command that trained it, as the README gives it")
    return p


def main(argv=None):
    tflib.init_tf()
    args = build_parser().parse_args(argv)
    try:
        entries = infer.shipped_generators()
        if args.name:
            if args.name not in entries:
                raise CLIError(f"{args.name} is not in weights/generators.json: one of {', '.join(entries)}")
            if not (args.run and args.commit and args.command):
                raise CLIError("recording a generator needs --run, --commit and --command")
            eval_path = args.eval or os.path.join(infer.WEIGHTS, f"eval-{args.name}.json")
            entries[args.name].update(record(entries[args.name], args.run, eval_path, args.command, args.commit))
            utils.write_json(os.path.join(infer.WEIGHTS, infer.SHIPPED), entries)
        for name, entry in entries.items():
            utils.write_atomic(card_path(entry), lambda f: f.write(card(name, entry).encode()))
            print(f"written {card_path(entry)}")
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
