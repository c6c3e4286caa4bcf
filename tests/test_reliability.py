"""Interrupted runs, killed saves, NaNs, full disks and long runs lose nothing (issue 5)."""
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

import data
import infer
import tflib
import train as train_module
import utils
from conftest import ROOT, assert_one_error_line, run_in_turn, run_script
from test_data import png_chunk, write_png16
from test_infer import cli
from test_train import TINY, checkpoint_state, train

FAST = [*TINY, "--content-loss", "mse"]  # no VGG16: these tests are about the loop, not the loss


def start(*args, code=None):
    """train.py (or `code` run with train.py's arguments) as a background process. Its output is piped
    but not read until it ends: fine for the few steps these tests wait for."""
    program = ["-c", code] if code else [os.path.join(ROOT, "train.py")]
    return subprocess.Popen([sys.executable, *program, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def saved_steps(run_dir):
    return sorted(int(re.search(r"-(\d+)\.index$", p).group(1)) for p in glob.glob(f"{run_dir}/model.ckpt-*.index"))


def interrupt(signum, run_dir, *args):
    """Starts training, sends `signum` once a checkpoint newer than the existing ones is written,
    checks the exit code and message; returns the step of the checkpoint saved on the way out."""
    before = max(saved_steps(run_dir), default=-1)
    process = start(*args)
    wait_for(lambda: max(saved_steps(run_dir), default=-1) > before, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-2000:]
    saved = re.search(rf"{signal.Signals(signum).name}: saved (\S+)-(\d+); continue with", out)
    assert saved, out[-2000:]
    step = int(saved.group(2))
    assert checkpoint_state(run_dir)[0] == step
    return step


def variables(run_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(run_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_signals_save_and_resume_continues_exactly_where_it_stopped(tmp_path):
    """SIGINT, resume, SIGTERM, resume to step T gives bit for bit the variables of one run to T
    (weights, Adam slots, step, phase), so the data order and crops resumed right too."""
    common = [*FAST, "--runs-dir", str(tmp_path), "--pretrain-iters", "2", "--save-every", "3"]
    stopped = interrupt(signal.SIGINT, tmp_path / "b", *common, "--name", "b", "--gan-iters", "100000")
    again = interrupt(signal.SIGTERM, tmp_path / "b", "--runs-dir", str(tmp_path), "--name", "b", "--resume")
    assert again > stopped >= 2
    total = again + 2
    resumed = train("--runs-dir", str(tmp_path), "--name", "b", "--resume", "--gan-iters", str(total - 2))
    straight = train(*common, "--name", "a", "--gan-iters", str(total - 2))
    assert resumed.returncode == straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    assert checkpoint_state(tmp_path / "b") == checkpoint_state(tmp_path / "a") == (total, 2)
    a, b = variables(tmp_path / "a"), variables(tmp_path / "b")
    assert a.keys() == b.keys() and any(name.endswith("_adam") for name in a)  # slots too
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert len(saved_steps(tmp_path / "b")) == 2, "resumed runs must keep deleting old checkpoints"


# Pauses the second checkpoint save after its data and index files are in place but before the
# `checkpoint` state file names it: the moment a kill could do the most harm.
PAUSE_IN_SAVE = """
import os, runpy, sys, time
from tensorflow.python.checkpoint import checkpoint_management
update, calls = checkpoint_management.update_checkpoint_state_internal, []
def paused(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        open(os.path.join(kwargs["save_dir"], "paused"), "w").close()
        time.sleep(600)
    return update(*args, **kwargs)
checkpoint_management.update_checkpoint_state_internal = paused
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    run_dir = tmp_path / "k"
    process = start(*FAST, "--runs-dir", str(tmp_path), "--name", "k", "--pretrain-iters", "100", code=PAUSE_IN_SAVE)
    wait_for(lambda: (run_dir / "paused").exists(), process)
    process.kill()
    process.communicate()
    assert saved_steps(run_dir) == [2, 4]  # the new files are there, but not named by the state file
    assert checkpoint_state(run_dir) == (2, 0)
    assert all(np.all(np.isfinite(v)) for v in variables(run_dir).values())
    result = train("--runs-dir", str(tmp_path), "--name", "k", "--resume", "--pretrain-iters", "3", "--pretrain-only")
    assert result.returncode == 0 and "resumed" in result.stdout and "model.ckpt-2" in result.stdout, result.stderr[-2000:]
    assert checkpoint_state(run_dir) == (3, 1)


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    result = train(*FAST, "--runs-dir", str(tmp_path), "--name", "n", "--lr", "1e38", "--save-every", "1",
                   "--pretrain-iters", "50")
    assert result.returncode == 1
    error = assert_one_error_line(result, "lower --lr")
    nan_step = int(re.search(r"error: \w+ became (?:nan|inf|-inf) at step (\d+)", error).group(1))
    step, _ = checkpoint_state(tmp_path / "n")
    assert step < nan_step and f"model.ckpt-{step}" in error
    assert all(np.all(np.isfinite(v)) for v in variables(tmp_path / "n").values())


# ---------------------------------------------------------------- in one process: memory, full disk

@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A 300 MB tmpfs: room for the three 90 MB checkpoints of the tiny configuration, and no more."""
    path = tmp_path_factory.mktemp("disk")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the disk-full tests need one")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def ballast(disk, free_bytes):
    """Fills the disk until about `free_bytes` are left; returns the file to delete afterwards."""
    path = disk / "ballast"
    size = int(shutil.disk_usage(disk).free - free_bytes)
    with open(path, "wb") as f:
        f.write(b"\0" * max(size, 0))
    return path


@pytest.fixture(scope="module")
def trainer(disk):
    cfg, run_dir, _ = train_module.make_config([*FAST, "--runs-dir", str(disk), "--name", "m", "--save-every", "100000",
                                                "--sample-every", "100000", "--pretrain-iters", "20"])
    trainer = train_module.Trainer(cfg, run_dir)
    os.makedirs(run_dir)
    trainer.open_writer()
    with trainer.graph.as_default():  # not eager, as in train.py: the Saver needs that
        yield trainer
    trainer.close()


def test_the_start_refuses_a_disk_without_room_for_the_checkpoints(disk):
    full = ballast(disk, 200e6)
    try:
        with pytest.raises(utils.CLIError, match=r"GB free, the checkpoints of this run need 0\.2\d GB"):
            train_module.Trainer(train_module.make_config([*FAST, "--runs-dir", str(disk), "--name", "x"])[0],
                                 str(disk / "x"))
    finally:
        os.remove(full)


# A run of the tiny configuration in a process of its own (pytest's output capture and the other
# tests' allocations would blur it) that reports, over 100 GAN iterations after a warm-up of 30, how much
# Python memory is still held (tracemalloc: exact) and how far the resident size's high-water mark
# rose (noisy: TensorFlow's allocator caches swing it by ~20 MB).
MEASURE_MEMORY = """
import os, re, sys, tracemalloc
import monitor
import tflib
import train
tflib.init_tf()
monitor.plot_training = lambda run_dir: []  # once per phase, reading every event: not a per-step cost
def peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1)) / 1024
cfg, run_dir, _ = train.make_config(sys.argv[1:])
trainer = train.Trainer(cfg, run_dir)
os.makedirs(run_dir)
with trainer.graph.as_default():
    trainer.open_writer()
    trainer.run_phase(0, 0, 20, trainer.pretrain_step)
    trainer.run_phase(1, 20, 50, trainer.gan_step)
    tracemalloc.start()
    peak, python = peak_mb(), tracemalloc.get_traced_memory()[0]
    trainer.run_phase(1, 50, 150, trainer.gan_step)
    print(f"peak RSS {peak:.0f} MB: +{peak_mb() - peak:.1f} MB, Python +{(tracemalloc.get_traced_memory()[0] - python) / 1e6:.3f} MB")
"""


def test_memory_stays_flat_over_a_hundred_steps(tmp_path):
    result = run_script(None, *FAST, "--runs-dir", tmp_path, "--name", "m", "--save-every", "100000",
                        "--sample-every", "100000", "--pretrain-iters", "20", code=MEASURE_MEMORY)
    assert result.returncode == 0, result.stderr[-2000:]
    report = re.search(r"peak RSS \d+ MB: \+([\d.]+) MB, Python \+(-?[\d.]+) MB", result.stdout)
    print(report.group(0))
    # Measured: Python +0.03 to +0.10 MB; RSS +0 to +18 MB (TINY writes an image summary every other step).
    # Keeping one 32x32 crop per step (12 KB) gives Python +1.29 MB; leaking 300 KB of C memory per
    # sess.run, RSS +54 MB (150 KB: +15.5 MB, within what the allocator's caches absorb).
    assert float(report.group(2)) < 0.5
    assert float(report.group(1)) < 25


def test_a_failed_save_removes_its_partial_files_and_keeps_the_last_checkpoint(trainer, disk):
    first = trainer.save()
    step = trainer.step() + 1
    full = ballast(disk, 30e6)  # a third of a checkpoint
    try:
        with pytest.raises(train_module.TrainingError, match=f"cannot save the checkpoint of step {step}.*free some space"):
            trainer.run_phase(1, step - 1, step, trainer.gan_step)  # saves at the end of the phase
    finally:
        os.remove(full)
    assert tf.compat.v1.train.latest_checkpoint(trainer.run_dir) == first
    assert not glob.glob(f"{trainer.run_dir}/model.ckpt-{step}*")
    assert variables(trainer.run_dir).keys()


def test_non_finite_weights_are_never_saved(trainer):
    last = tf.compat.v1.train.latest_checkpoint(trainer.run_dir)
    kernel = trainer.graph.get_tensor_by_name("generator/conv_in/kernel:0")
    variable = next(v for v in trainer.model.saveable_variables() if v.name == kernel.name)
    poisoned = trainer.sess.run(variable)
    poisoned[0, 0, 0, 0] = np.nan
    tflib.set_variables(trainer.sess, {variable: poisoned})
    with pytest.raises(train_module.TrainingError, match="not finite.*lower --lr"):
        trainer.save()
    assert tf.compat.v1.train.latest_checkpoint(trainer.run_dir) == last


# ---------------------------------------------------------------- issue 16: weights files, damage, locks, images

class RunsCode:
    """Unpickled, runs a shell command: what a booby-trapped vgg16.npy carries."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def booby_trapped_npy(path, marker, nested):
    """A .npy that creates `marker` when unpickled: the object alone, or inside the classic dict of layers."""
    trap = RunsCode(f"touch {marker}")
    content = {"conv1_1": [trap, np.zeros(64, np.float32)]} if nested else trap
    np.save(path, np.array(content, dtype=object), allow_pickle=True)


WEIGHTS_CASES = [(how, nested) for how in ("vgg16.py --check", "train.py --vgg-weights", "evaluate.py --vgg-weights")
                 for nested in (False, True)]


@pytest.fixture(scope="module")
def weights_results(tiny_run, tmp_path_factory):
    """{(how, nested): (the case's folder, the result)}: each command of WEIGHTS_CASES given a booby-trapped
    weights file in a folder of its own, all run in one process."""
    commands, folders = [], []
    for how, nested in WEIGHTS_CASES:
        tmp_path = tmp_path_factory.mktemp("weights")
        weights = tmp_path / "vgg16.npy"
        booby_trapped_npy(weights, tmp_path / "code-ran", nested)
        if how.startswith("vgg16"):
            commands.append(("vgg16.py", "--check", weights))
        elif how.startswith("train"):
            commands.append(("train.py", *TINY, "--runs-dir", tmp_path, "--name", "t", "--vgg-weights", weights))
        else:
            (tmp_path / "set").mkdir()
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "set" / "black.png")
            commands.append(("evaluate.py", "--checkpoint", tiny_run, "--data", tmp_path / "set", "--vgg-weights", weights,
                             "--out-dir", tmp_path / "eval"))
        folders.append(tmp_path)
    return dict(zip(WEIGHTS_CASES, zip(folders, run_in_turn(commands))))


@pytest.mark.parametrize("how, nested", WEIGHTS_CASES,
                         ids=[f"{how}-{'inside the dict' if nested else 'object'}" for how, nested in WEIGHTS_CASES])
def test_a_weights_file_cannot_run_code(weights_results, how, nested):
    tmp_path, result = weights_results[how, nested]
    assert not (tmp_path / "code-ran").exists(), "unpickling the weights file ran its code"
    assert str(tmp_path / "vgg16.npy") in assert_one_error_line(result, "refused")
    assert not (tmp_path / "t").exists() and not (tmp_path / "eval").exists()


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run directory holding model.ckpt-2 and model.ckpt-4."""
    runs = tmp_path_factory.mktemp("two")
    result = train(*FAST, "--runs-dir", str(runs), "--name", "run", "--pretrain-iters", "4", "--pretrain-only")
    assert result.returncode == 0 and saved_steps(runs / "run") == [2, 4], result.stderr[-2000:]
    return runs / "run"


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_bytes(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        block = f.read(64)
        f.seek(-len(block), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in block))


@pytest.mark.parametrize("damage", [truncate, flip_bytes])
def test_a_damaged_newest_checkpoint_resumes_from_the_intact_one_and_keeps_it(two_checkpoints, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(two_checkpoints, run_dir)
    data, = glob.glob(f"{run_dir}/model.ckpt-4.data-*")
    damage(data)
    damaged = open(data, "rb").read()
    result = train("--runs-dir", str(tmp_path), "--name", "run", "--resume", "--pretrain-iters", "5", "--pretrain-only")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    said = result.stdout + result.stderr
    assert re.search(r"model\.ckpt-4 is damaged \(.+\)", said), said[-2000:]
    assert re.search(r"resum\w+ (from )?\S*model\.ckpt-2\b", said), said[-2000:]
    assert checkpoint_state(run_dir) == (5, 1)
    kept = [p for p in glob.glob(f"{run_dir}/**/*", recursive=True) if os.path.isfile(p) and open(p, "rb").read() == damaged]
    assert kept, "the damaged checkpoint's data file was deleted or replaced"


@pytest.mark.parametrize("state", ['model_checkpoint_path: "model.ckpt-4"\n', None],
                         ids=["newest named alone", "no checkpoint file"])
def test_resume_finds_checkpoints_the_checkpoint_file_does_not_list(two_checkpoints, tmp_path, state):
    """A `checkpoint` file written by hand (as when copying one checkpoint into a new run) or lost: --resume
    continues from the newest checkpoint all the same, never from step 0, which would write over them."""
    run_dir = tmp_path / "run"
    shutil.copytree(two_checkpoints, run_dir)
    if state:
        (run_dir / "checkpoint").write_text(state)
    else:
        (run_dir / "checkpoint").unlink()
    result = train("--runs-dir", str(tmp_path), "--name", "run", "--resume", "--pretrain-iters", "5", "--pretrain-only")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"resumed \S*model\.ckpt-4\b", result.stdout), result.stdout[-2000:]
    for path in glob.glob(f"{two_checkpoints}/model.ckpt-*"):  # the pre-training had ended at 4: nothing to add
        assert (run_dir / os.path.basename(path)).read_bytes() == open(path, "rb").read(), path


def test_a_run_directory_in_use_stops_a_second_training_until_the_first_dies(tmp_path):
    run_dir = tmp_path / "r"
    first = start(*FAST, "--runs-dir", str(tmp_path), "--name", "r", "--pretrain-iters", "100000")
    try:
        wait_for(lambda: tf.train.latest_checkpoint(run_dir), first)  # the state file, written after the files
        step = checkpoint_state(run_dir)[0]
        second = train("--runs-dir", str(tmp_path), "--name", "r", "--resume", "--pretrain-iters", str(step + 2),
                       "--pretrain-only")
        assert str(first.pid) in assert_one_error_line(second, "in use")
        assert first.poll() is None, "the first training must go on"
    finally:
        first.kill()  # a crash: the lock must not outlive it
        first.communicate()
    step = checkpoint_state(run_dir)[0]
    again = train("--runs-dir", str(tmp_path), "--name", "r", "--resume", "--pretrain-iters", str(step + 1), "--pretrain-only")
    assert again.returncode == 0, again.stderr[-2000:]
    assert checkpoint_state(run_dir) == (step + 1, 1)


def with_orientation(image, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation  # EXIF Orientation, as phones write it instead of turning the pixels
    return dict(exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["jpg", "png", "16-bit grey png"])
def test_images_are_read_upright_by_training_evaluation_and_inference(tmp_path, orientation, kind):
    """Stored 48 wide and 32 high; what viewers show (PIL's exif_transpose) is what every reader returns."""
    stored = np.random.default_rng(orientation).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    image = Image.fromarray(stored) if kind != "16-bit grey png" else Image.fromarray(stored[:, :, 0].astype(np.uint16) * 257)
    path = tmp_path / f"photo.{kind[-3:]}"
    image.save(path, **with_orientation(image, orientation), **({"quality": 95} if kind == "jpg" else {}))
    with Image.open(path) as opened:
        upright = ImageOps.exif_transpose(opened)
        expected = np.asarray(upright if kind == "16-bit grey png" else upright.convert("RGB"))
    expected = expected[:, :, None] if expected.ndim == 2 else expected
    np.testing.assert_array_equal(infer.read_image(str(path)), expected)
    as_8_bit_rgb = np.repeat(expected >> 8, 3, axis=2).astype(np.uint8) if kind == "16-bit grey png" else expected
    np.testing.assert_array_equal(data.load_image(str(path)), as_8_bit_rgb)


def test_inference_writes_a_phone_photo_upright_and_refuses_a_16_bit_tiff(tiny_run, tmp_path):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    photo.save(tmp_path / "phone.jpg", quality=95, **with_orientation(photo, 6))  # viewers show it 32 wide, 48 high
    result = cli("infer.py", "--checkpoint", tiny_run, tmp_path / "phone.jpg", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "phone_x4.png").size == (128, 192)
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "scan.tif")
    result = cli("infer.py", "--checkpoint", tiny_run, tmp_path / "scan.tif", "-o", tmp_path / "out")
    assert "scan.tif" in assert_one_error_line(result, "not a JPEG, PNG or BMP")
    assert not (tmp_path / "out" / "scan_x4.png").exists()


def test_training_evaluation_and_inference_see_the_same_pixels(tmp_path):
    """load_image (training, evaluation) is infer.read_image brought to 8-bit RGB, for every kind of file."""
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (12, 10, 3)).astype(np.uint16)
    write_png16(str(tmp_path / "rgb16.png"), rgb16)
    Image.fromarray(rng.integers(0, 65536, (12, 10)).astype(np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 2), dtype=np.uint8), "LA").save(tmp_path / "la.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8), "CMYK").save(tmp_path / "cmyk.jpg")
    for path in sorted(map(str, tmp_path.iterdir())):
        pixels = infer.read_image(path)
        if pixels.dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        rgb = pixels[:, :, :3] if pixels.shape[2] >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
        np.testing.assert_array_equal(data.load_image(path), rgb, err_msg=path)
    np.testing.assert_array_equal(infer.read_image(str(tmp_path / "rgb16.png")), rgb16)


# Pauses infer.py inside its PNG encoder, with the output's temporary file open and half written, and
# says so by creating the file `paused` beside the -o folder.
PAUSE_IN_WRITE = """
import os, runpy, sys, time, zlib
paused = os.path.join(os.path.dirname(os.path.abspath(sys.argv[sys.argv.index("-o") + 1])), "paused")
compressobj = zlib.compressobj
class Paused:
    def __init__(self, *args):
        self.inner = compressobj(*args)
    def compress(self, data):
        open(paused, "w").close()
        time.sleep(600)
    def flush(self):
        return self.inner.flush()
zlib.compressobj = Paused
sys.argv[0] = "infer.py"
runpy.run_path("infer.py", run_name="__main__")
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_while_writing_leaves_no_partial_file_and_one_line(tiny_run, tmp_path, signum):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    process = start("--checkpoint", str(tiny_run), str(tmp_path / "in.png"), "-o", str(out), code=PAUSE_IN_WRITE)
    wait_for(lambda: (tmp_path / "paused").exists(), process)
    assert os.listdir(out), "the output's temporary file should be there, half written"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err[-2000:]
    assert os.listdir(out) == []
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
    assert signal.Signals(signum).name in err


def png_claiming(width, height, depth=8, colour=2):
    """A PNG whose header claims width x height pixels and whose image data is junk."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (utils.PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x01\x02" * 40))
            + png_chunk(b"IEND", b""))


def write_rgb(path, size):
    Image.fromarray(np.random.default_rng(size[0]).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


INFER_ONE_LINERS = {  # case: words the one error line must hold
    "decompression bomb": "decompression bomb",
    "-o names a file": "is a file",
    "--export under a file": "is a file",
    "a 16-bit PNG TensorFlow cannot decode": "cannot read image",
}


@pytest.fixture(scope="module")
def infer_one_liner_results(tiny_run, tmp_path_factory):
    """{case: (the case's folder, its files before, the result)} of infer.py in each case of INFER_ONE_LINERS,
    all run in one process."""
    cases = {}
    for case in INFER_ONE_LINERS:
        tmp_path = tmp_path_factory.mktemp("infer")
        good, file = tmp_path / "good.png", tmp_path / "file"
        write_rgb(good, (8, 8))
        file.write_text("a user's file\n")
        if case == "decompression bomb":
            (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
            args = [tmp_path / "bomb.png", "-o", tmp_path / "out"]
        elif case == "-o names a file":
            args = [good, "-o", file]
        elif case == "--export under a file":
            args = ["--export", file / "model"]
        else:
            (tmp_path / "broken16.png").write_bytes(png_claiming(8, 8, depth=16))
            args = [tmp_path / "broken16.png", "-o", tmp_path / "out"]
        cases[case] = tmp_path, sorted(os.listdir(tmp_path)), ("infer.py", "--checkpoint", tiny_run, *args)
    results = run_in_turn([command for _, _, command in cases.values()])
    return {case: (tmp_path, before, result) for (case, (tmp_path, before, _)), result in zip(cases.items(), results)}


@pytest.mark.parametrize("case, words", INFER_ONE_LINERS.items(), ids=list(INFER_ONE_LINERS))
def test_infer_bad_situations_are_one_line(infer_one_liner_results, case, words):
    tmp_path, before, result = infer_one_liner_results[case]
    error = assert_one_error_line(result, words)
    assert "Graph execution error" not in error
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "file").read_text() == "a user's file\n"


def test_a_folder_without_images_is_named_with_the_option_that_chose_it(tiny_run, tmp_path):
    """Each command's error points at its own option for another folder, not at train.py's --data-dir."""
    (tmp_path / "empty").mkdir()
    infer_result, evaluate_result, train_result = run_in_turn([
        ("infer.py", "--checkpoint", tiny_run, tmp_path / "empty", "-o", tmp_path / "out"),
        ("evaluate.py", "--checkpoint", tiny_run, "--data", tmp_path / "empty", "--out-dir", tmp_path / "eval"),
        ("train.py", *FAST, "--val-every", "2", "--val-dir", tmp_path / "empty", "--runs-dir", tmp_path / "runs")])
    infer_error, evaluate_error, train_error = (assert_one_error_line(result, f"no JPEG/PNG/BMP images under {tmp_path / 'empty'}")
                                                for result in (infer_result, evaluate_result, train_result))
    assert infer_error.endswith("put your own images there")  # the folder was named as an input, by no option
    assert evaluate_error.endswith("or name another folder with --data")
    assert train_error.endswith("or name another folder with --val-dir")
    assert os.listdir(tmp_path) == ["empty"]


TOO_SMALL = [6, 8, 16, 19]


@pytest.fixture(scope="module")
def too_small_results(tiny_run, tmp_path_factory):
    """{side: (the case's folder, the result)}: evaluate.py on a set holding an image `side` pixels high,
    for each side of TOO_SMALL, all run in one process."""
    folders = [tmp_path_factory.mktemp("small") for _ in TOO_SMALL]
    for tmp_path, side in zip(folders, TOO_SMALL):
        (tmp_path / "set").mkdir()
        write_rgb(tmp_path / "set" / "big.png", (40, 40))
        write_rgb(tmp_path / "set" / "tiny.png", (side, 40))
    results = run_in_turn([("evaluate.py", "--checkpoint", tiny_run, "--data", tmp_path / "set", "--out-dir", tmp_path / "eval")
                           for tmp_path in folders])
    return dict(zip(TOO_SMALL, zip(folders, results)))


@pytest.mark.parametrize("side", TOO_SMALL)
def test_evaluate_refuses_images_too_small_to_score_before_the_work(too_small_results, side):
    tmp_path, result = too_small_results[side]
    assert "tiny.png" in assert_one_error_line(result, "too small")
    assert not (tmp_path / "eval").exists()


def test_evaluate_refuses_an_out_dir_that_is_a_file_before_the_work(tiny_run, tmp_path, monkeypatch):
    (tmp_path / "set").mkdir()
    write_rgb(tmp_path / "set" / "a.png", (40, 40))
    (tmp_path / "file").write_text("a user's file\n")
    result = cli("evaluate.py", "--checkpoint", tiny_run, "--data", tmp_path / "set", "--out-dir", tmp_path / "file",
                 "--vgg-weights", tmp_path / "absent.npz")  # the weights are checked after the out dir
    assert "is a file" in assert_one_error_line(result, str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "a user's file\n"


def test_file_names_that_are_not_utf_8_are_printed_safely(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        write_rgb(folder / f"{i}.png", (40, 40))
    bad_name = os.fsdecode(b"caf\xe9.png")  # Latin-1, as an old camera or a Windows share may write it
    (folder / bad_name).write_bytes(b"not an image")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict, as in en_US.UTF-8 (Python escapes in C.UTF-8)
    training = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *FAST, "--dataset", "folder",
                               "--data-dir", str(folder), "--runs-dir", str(tmp_path), "--name", "u", "--pretrain-iters",
                               "1", "--pretrain-only", "--max-bad-fraction", "0.5"],
                              cwd=ROOT, capture_output=True, text=True, errors="replace", env=env, timeout=600)
    assert training.returncode == 0 and "Traceback" not in training.stderr, training.stderr[-2000:]
    assert "left out 1 unreadable" in training.stdout and "caf" in training.stdout
    os.remove(folder / bad_name)
    os.rename(folder / "0.png", folder / os.fsdecode(b"caf\xe9.png"))
    inference = subprocess.run([sys.executable, os.path.join(ROOT, "infer.py"), "--checkpoint", str(tiny_run),
                                str(folder), "-o", str(tmp_path / "out")],
                               cwd=ROOT, capture_output=True, text=True, errors="replace", env=env, timeout=600)
    assert inference.returncode == 0 and "Traceback" not in inference.stderr, inference.stderr[-2000:]
    assert len(os.listdir(tmp_path / "out")) == 3


def test_tensorflow_errors_are_reported_by_their_reason():
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        with pytest.raises(tf.errors.OpError) as e:
            sess.run(tf.io.decode_png(tf.constant(png_claiming(8, 8, depth=16)), dtype=tf.uint16))
    assert e.value.message.startswith("Graph execution error:")  # what the commands used to print
    reason = utils.first_line(e.value)
    assert reason and "Graph execution error" not in reason and reason in e.value.message


def test_inputs_with_the_same_name_never_replace_each_other(tiny_run, tmp_path):
    for folder in ("a", "b", "tree/x", "tree/y"):
        (tmp_path / folder).mkdir(parents=True)
    write_rgb(tmp_path / "a" / "photo.png", (8, 8))
    write_rgb(tmp_path / "b" / "photo.png", (12, 8))
    write_rgb(tmp_path / "tree" / "x" / "photo.png", (8, 8))
    write_rgb(tmp_path / "tree" / "y" / "photo.png", (12, 8))
    # files named on the command line: one clear error before any output
    for flags in ([], ["--overwrite"]):
        result = cli("infer.py", "--checkpoint", tiny_run, tmp_path / "a" / "photo.png", tmp_path / "b" / "photo.png",
                     "-o", tmp_path / "out", *flags)
        assert "photo_x4.png" in assert_one_error_line(result, "would both be written to")
        assert not (tmp_path / "out").exists()
    # a folder tree: each output keeps its subfolder
    result = cli("infer.py", "--checkpoint", tiny_run, tmp_path / "tree", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "out" / "x" / "photo_x4.png").size == (32, 32)
    assert Image.open(tmp_path / "out" / "y" / "photo_x4.png").size == (32, 48)


def test_an_output_never_replaces_an_input(tiny_run, tmp_path):
    write_rgb(tmp_path / "photo.png", (8, 8))
    write_rgb(tmp_path / "photo_x4.png", (8, 8))  # the user's own file, which is an input too
    users = (tmp_path / "photo_x4.png").read_bytes()
    result = cli("infer.py", "--checkpoint", tiny_run, tmp_path, "-o", tmp_path, "--overwrite")
    assert "photo_x4.png" in assert_one_error_line(result, "is one of the inputs")
    assert (tmp_path / "photo_x4.png").read_bytes() == users and sorted(os.listdir(tmp_path)) == ["photo.png", "photo_x4.png"]


def test_evaluate_keeps_sets_with_the_same_name_apart(tiny_run, tmp_path, vgg_weights):
    for folder, size in (("one/Set5/HR", (40, 40)), ("two/Set5/HR", (44, 48))):
        (tmp_path / folder).mkdir(parents=True)
        write_rgb(tmp_path / folder / "bird.png", size)
    result = cli("evaluate.py", "--checkpoint", tiny_run, "--data", tmp_path / "one/Set5/HR", tmp_path / "two/Set5/HR",
                 "--out-dir", tmp_path / "eval", "--save-images")
    assert result.returncode == 0, result.stderr[-2000:]
    summary, = glob.glob(str(tmp_path / "eval" / "eval-*.json"))
    sets = json.load(open(summary))["sets"]
    assert len(sets) == 2 and all(s["images"] == 1 for s in sets.values())
    saved = glob.glob(str(tmp_path / "eval" / "eval-*" / "*" / "bird_sr.png"))
    assert sorted(Image.open(p).size for p in saved) == [(40, 40), (48, 44)]  # both birds, (width, height)


def test_evaluating_another_set_keeps_the_rows_of_the_sets_evaluated_before(tiny_run, tmp_path, vgg_weights):
    for name, size in (("SetA", (40, 40)), ("SetB", (44, 48))):
        (tmp_path / name).mkdir()
        write_rgb(tmp_path / name / "bird.png", size)
    summary = tmp_path / "eval" / "eval-3.json"

    def evaluate(*names):
        result, = run_in_turn([("evaluate.py", "--checkpoint", tiny_run, "--data", *(tmp_path / n for n in names),
                                "--out-dir", tmp_path / "eval")])
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout, json.loads(summary.read_text())

    _, first = evaluate("SetA")
    out, second = evaluate("SetB")
    assert list(second["sets"]) == ["SetA", "SetB"] and second["sets"]["SetA"] == first["sets"]["SetA"]
    assert "| SetA |" not in out and "after the rows of SetA from before" in out  # printed: what was evaluated now
    assert (tmp_path / "eval" / "eval-3.md").read_text().count("| Set") == 2
    second["sha256"] = "0" * 64  # as if eval-3.json scored other weights saved under the same name
    summary.write_text(json.dumps(second))
    _, third = evaluate("SetB")
    assert list(third["sets"]) == ["SetB"] and third["sha256"] == first["sha256"] != "0" * 64


def test_a_symbolic_link_loop_is_walked_once(tmp_path):
    (tmp_path / "a").mkdir()
    write_rgb(tmp_path / "a" / "x.png", (8, 8))
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # back up to the top
    assert [os.path.basename(p) for p in data.list_images("folder", str(tmp_path))] == ["x.png"]
