"""Watching a training: its curves read back from the TensorBoard files and plotted, and the GAN's health."""
import collections
import glob
import json
import math
import os

import numpy as np

from tflib import tf, tf1
from utils import write_atomic

CURVES = {  # tag under summaries/: title (the report's figures 6 to 10, then D's outputs)
    "g_loss": "generator loss", "d_loss": "discriminator loss", "adv_loss": "adversarial loss",
    "content_loss": "content loss", "mse_loss": "MSE loss",
}

VALIDATION = {"psnr": "PSNR (dB)", "ssim": "SSIM", "vgg": "VGG distance", "niqe": "NIQE", "grid": "grid (8-bit levels)"}


def read_scalars(run_dir):
    """{tag: (steps, values)} of the summaries/* scalars in a run's TensorBoard files.

    A file that ends in a half-written record (its run is still writing it) is read up to there.
    """
    series = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        try:
            for event in tf1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("summaries/") and value.HasField("simple_value"):
                        series.setdefault(value.tag[len("summaries/"):], {})[event.step] = value.simple_value
        except tf.errors.DataLossError:
            pass
    return {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)])) for tag, points in series.items()}


def smooth(values, weight=0.9):
    """TensorBoard's smoothing: a debiased exponential moving average."""
    out, average = np.empty(len(values)), 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out[i] = average / (1 - weight ** (i + 1))
    return out


def plot_training(run_dir):
    """Write run_dir/plots/<tag>.png for each loss and D_outputs.png (mean D(x), D(G(z))); returns their paths.

    Each curve is drawn smoothed, with the raw values faint behind it; positive losses on a log scale.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    figures = [(tag, title, [tag]) for tag, title in CURVES.items() if tag in scalars]
    if "D_x" in scalars:
        figures.append(("D_outputs", "mean discriminator output", ["D_x", "D_G_z"]))
    paths = [path for path in [plot_validation(run_dir, plt)] if path]
    for name, title, tags in figures:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        for tag, color in zip(tags, ("C0", "C3")):
            steps, values = scalars[tag]
            label = {"D_x": "D(x)", "D_G_z": "D(G(z))"}.get(tag, tag)
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values), color=color, linewidth=1.5, label=label)
        ax.set(title=title, xlabel="iteration")
        if name != "D_outputs" and all((scalars[tag][1] > 0).all() for tag in tags):
            ax.set_yscale("log")  # a loss falls by orders of magnitude; its later steps matter as much
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(run_dir, "plots", name + ".png"))
        write_atomic(paths[-1], lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
    return paths


def read_validation(run_dir):
    """{metric: (steps, values)} of run_dir/val.jsonl, a step's last line kept (a resumed run scores
    its step again), a half-written last line skipped; {} without the file. Where the photos scored
    change (a resume with another --val-dir), a NaN at the new set's first step breaks the line: the
    two sets' scores are not comparable."""
    scores = {}
    try:
        with open(os.path.join(run_dir, "val.jsonl")) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                scores[entry["step"]] = entry
    except FileNotFoundError:
        return {}
    rows = []
    for step in sorted(scores):
        if rows and scores[step].get("images") != rows[-1][1].get("images"):
            rows.append((step, {}))
        rows.append((step, scores[step]))
    return {metric: (np.array([s for s, _ in rows]), np.array([e.get(metric, np.nan) for _, e in rows], float))
            for metric in VALIDATION if any(metric in entry for entry in scores.values())}


def plot_validation(run_dir, plt):
    """run_dir/plots/validation.png: each validation metric against the step, side by side; None without scores."""
    series = read_validation(run_dir)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3), dpi=100, squeeze=False)
    for ax, (metric, (steps, values)) in zip(axes[0], series.items()):
        ax.plot(steps, values, "o-", color="C2", markersize=3)
        for step in steps[np.isnan(values)]:  # another set of photos from here on
            ax.axvline(step, color="grey", linestyle=":", linewidth=1)
        ax.set(title=VALIDATION[metric], xlabel="iteration")
        ax.grid(alpha=0.3)
    fig.suptitle("validation (held-out photos, batch norm as inference runs it)", fontsize=10)
    fig.tight_layout()
    path = os.path.join(run_dir, "plots", "validation.png")
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


class GANHealth:
    """Looks at the values each GAN iteration already fetches and names what looks unhealthy."""

    def __init__(self, window=50):
        self.recent = collections.deque(maxlen=window)
        self.problems = []

    def update(self, losses):
        """Add one iteration's {"D_x", "D_G_z", "adv_loss", ...}; returns (and keeps) the problems seen, [] when healthy."""
        self.recent.append(losses)
        problems = [f"{tag} is {value}" for tag, value in losses.items() if not math.isfinite(value)]
        if len(self.recent) == self.recent.maxlen:
            n = len(self.recent)

            def mostly(test):  # 90%: a GAN that collapsed still has the odd spike
                return sum(map(test, self.recent)) >= 0.9 * n

            if mostly(lambda step: step["D_G_z"] < 0.01):
                problems.append(f"D(G(z)) below 0.01 in most of the last {n} iterations: the discriminator wins, "
                                "the generator gets little adversarial signal")
            if mostly(lambda step: step["D_x"] > 0.99):
                problems.append(f"D(x) above 0.99 in most of the last {n} iterations")
            if mostly(lambda step: step["adv_loss"] > 10):
                problems.append(f"adversarial loss above 10 in most of the last {n} iterations (exploding)")
        self.problems = problems
        return problems

    def means(self):
        """Each value's mean over the recent iterations, for the progress bar: one batch's D(x) and D(G(z))
        swing too widely to read."""
        return {tag: sum(step[tag] for step in self.recent if tag in step) / sum(tag in step for step in self.recent)
                for tag in self.recent[-1]}
