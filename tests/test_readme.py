"""The README's presets table says what train.py's PRESETS do."""
import os

import train
from conftest import ROOT


def readme_table(header):
    """The rows of the README table whose header line starts with `header`, as lists of cell strings."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line.strip() for line in f]
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def rate(x):
    return f"{x:.0e}".replace("e-0", "e-")  # 0.001 -> 1e-3


def rates_cell(cfg):
    """The 'Adam lr, beta1' cell a preset's configuration should have."""
    gan = rate(cfg["learning_rate"])
    schedule = [f"warm-up {cfg['warmup_iters']}"] * bool(cfg["warmup_iters"])
    schedule += ["cosine to 0"] * (cfg["pretrain_schedule"] == "cosine")
    if cfg["pretrain_lr"] is None and not schedule:
        return f"{gan}, {cfg['beta1']:g}"
    pretrain = rate(cfg["pretrain_lr"] or cfg["learning_rate"]) + (f" ({', '.join(schedule)})" if schedule else "")
    return f"pre-training {pretrain}; GAN {gan}; beta1 {cfg['beta1']:g}"


def test_the_presets_table_matches_train_py():
    rows = {row[0].split()[0].strip("`"): row for row in readme_table("| preset |")}
    assert set(rows) == set(train.PRESETS)
    for name, (_, hr_size, batch, rates, pretrain, gan, notes) in rows.items():
        cfg = dict(train.DEFAULTS, **train.PRESETS[name])
        assert (int(hr_size), int(batch)) == (cfg["hr_size"], cfg["batch_size"]), name
        assert rates == rates_cell(cfg), name
        assert (int(pretrain.replace(",", "")), int(gan.replace(",", ""))) == (cfg["pretrain_iters"], cfg["gan_iters"]), name
        assert ("x0.1" in notes) == cfg["lr_decay"], name
    assert "(default)" in rows[train.DEFAULTS["preset"]][0]
