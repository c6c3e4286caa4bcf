"""The shipped generators: the compact .npz export, weights/generators.json and its checksums, the model
cards, `--model NAME` in infer.py and evaluate.py, and train.py --init-from."""
import json
import os

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

import infer
import metrics
import model_card
import tflib
import utils
from conftest import ROOT, assert_one_error_line, run_script
from model import generator

tf1 = tf.compat.v1
PHOTO = skimage.data.astronaut()  # in neither Set5, Set14, T91 nor the sample training photos' validation split
NAME = infer.DEFAULT_MODEL  # the shipped generator the tests stand in for
TINY = ["--dataset", "sample", "--hr-size", "32", "--blocks", "2", "--val-every", "0", "--summary-every", "1"]


def cli(script, *args, weights=None):
    """Run script's main() in a process of its own; with `weights`, the shipped generators are looked up there instead
    of in weights/ (tests never touch the real ones)."""
    code = f"import sys, infer, {script}; infer.WEIGHTS = {str(weights or infer.WEIGHTS)!r}; sys.exit({script}.main(sys.argv[1:]))"
    return run_script(None, *args, code=code)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run's generator exported as an .npz."""
    path = tmp_path_factory.mktemp("export") / "tiny.npz"
    result = cli("infer", "--model", tiny_run, "--export-generator", path)
    assert result.returncode == 0, result.stderr[-2000:]
    return path


def shipped(folder, npz, sha256=None):
    """A weights folder holding `npz` as the shipped default generator (NAME), recorded with `sha256` (default: its own)."""
    folder.mkdir(exist_ok=True)
    (folder / f"{NAME}.npz").write_bytes(npz.read_bytes())
    entry = {key: None for key in json.loads(open(os.path.join(infer.WEIGHTS, infer.SHIPPED)).read())[NAME]}
    entry.update(file=f"{NAME}.npz", title=NAME, description="test", sha256=sha256 or utils.sha256_file(npz))
    (folder / infer.SHIPPED).write_text(json.dumps({NAME: entry}))
    return folder


def lr_photo(folder):
    path = folder / "photo.png"
    Image.fromarray(metrics.imresize(PHOTO[:64, :48], 1 / 4)).save(path)
    return path


def test_the_exported_npz_is_the_generator_as_inference_runs_it(tiny_run, exported):
    """Float32 arrays named as the generator's variables (no optimizer slots, no discriminator), and blocks;
    infer.py gives the same result from it as from the run."""
    with np.load(exported) as z:
        arrays = {name: z[name] for name in z.files}
    assert int(arrays.pop(infer.BLOCKS_KEY)) == 2
    graph = tf.Graph()
    with graph.as_default():
        generator(tf1.placeholder(tf.float32, [1, 8, 8, 3]), 2, training=False)
        assert set(arrays) == {v.op.name for v in tf1.global_variables()}
    assert all(a.dtype == np.float32 for a in arrays.values())
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tiny_run)))
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, reader.get_tensor(name), err_msg=name)
    assert any(name.endswith("/moving_variance") for name in arrays)
    lr = metrics.imresize(PHOTO[:64, :48], 1 / 4) / 127.5 - 1
    from_run, from_npz = infer.Upscaler(str(tiny_run)), infer.Upscaler(str(exported))
    np.testing.assert_array_equal(from_npz.run(lr), from_run.run(lr))
    from_run.close()
    from_npz.close()


def test_a_16_block_generator_exports_to_about_6_mb(tmp_path, monkeypatch):
    graph = tf.Graph()
    with graph.as_default(), tf1.Session() as sess:
        generator(tf1.placeholder(tf.float32, [1, 8, 8, 3]), 16, training=False)
        sess.run(tf1.global_variables_initializer())
        weights = sess.run({v.op.name: v for v in tf1.global_variables()})
    monkeypatch.setattr(infer, "generator_weights", lambda path: weights)
    infer.export_generator("a run", str(tmp_path / "g.npz"))
    assert 5.5e6 < os.path.getsize(tmp_path / "g.npz") < 6.5e6
    assert infer.read_npz(str(tmp_path / "g.npz"))[1] == 16


def test_a_generator_file_that_is_not_an_npz_is_named_so(tmp_path):
    """Not numpy's advice to unpickle it, which it gives for any file that is not a zip archive."""
    path = tmp_path / "g.npz"
    for content in (b"", b"not a zip", b"\x80\x04junk"):
        path.write_bytes(content)
        with pytest.raises(utils.CLIError) as e:
            infer.read_npz(str(path))
        assert str(e.value) == f"cannot read the generator {path}: not a .npz (zip) archive"


def test_infer_without_a_model_runs_the_shipped_default_once_its_checksum_matches(exported, tmp_path):
    photo = lr_photo(tmp_path)
    weights = shipped(tmp_path / "weights", exported)
    result = cli("infer", photo, "-o", tmp_path / "shipped", weights=weights)
    assert result.returncode == 0, result.stderr[-2000:]
    result = cli("infer", "--checkpoint", exported, photo, "-o", tmp_path / "by-path")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "shipped" / "photo_x4.png").read_bytes() == (tmp_path / "by-path" / "photo_x4.png").read_bytes()

    damaged = bytearray(exported.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    (weights / f"{NAME}.npz").write_bytes(bytes(damaged))
    result = cli("infer", "--model", NAME, photo, "-o", tmp_path / "out", weights=weights)
    assert_one_error_line(result, "sha256")
    assert not (tmp_path / "out").exists()


def test_a_shipped_generator_that_is_missing_is_one_line(exported, tmp_path):
    weights = shipped(tmp_path / "weights", exported)
    (weights / f"{NAME}.npz").unlink()
    (tmp_path / "set").mkdir()
    Image.fromarray(PHOTO[:40, :48]).save(tmp_path / "set" / "a.png")
    for script, args in (("infer", [lr_photo(tmp_path), "-o", tmp_path / "out"]),
                         ("evaluate", ["--model", NAME, "--data", tmp_path / "set"]),
                         ("train", [*TINY, "--init-from", NAME, "--runs-dir", tmp_path / "runs"])):
        assert_one_error_line(cli(script, *args, weights=weights), "is missing")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_a_shipped_name_wins_over_a_folder_of_that_name(exported, tmp_path, monkeypatch):
    """The default model stays the shipped one when the working directory holds a folder named like it."""
    weights = shipped(tmp_path / "weights", exported)
    monkeypatch.setattr(infer, "WEIGHTS", str(weights))
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    assert infer.resolve_model(NAME) == os.path.join(str(weights), f"{NAME}.npz")
    assert infer.resolve_model(f"./{NAME}") == f"./{NAME}"
    (weights / infer.SHIPPED).unlink()
    assert infer.resolve_model(f"./{NAME}") == f"./{NAME}"  # a path of one's own needs no list of shipped ones
    with pytest.raises(utils.CLIError, match="shipped generators"):
        infer.resolve_model("no-such-model")


def test_a_generator_not_shipped_yet_is_one_line(tmp_path):
    weights = shipped(tmp_path / "weights", lr_photo(tmp_path))  # any file: it is never read
    entries = json.loads((weights / infer.SHIPPED).read_text())
    entries[NAME]["sha256"] = None
    (weights / infer.SHIPPED).write_text(json.dumps(entries))
    assert_one_error_line(cli("infer", lr_photo(tmp_path), "-o", tmp_path / "out", weights=weights), "not shipped yet")


def test_evaluate_scores_the_shipped_generator_and_model_card_records_it(tiny_run, exported, tmp_path):
    """As the person shipping a generator does (weights/README.md): evaluate.py --model NAME writes
    weights/eval-NAME.json, model_card.py NAME records it with the checksum and the run's facts, and the card."""
    weights = shipped(tmp_path / "weights", exported)
    for name in model_card.EVAL_SETS:
        (tmp_path / name / "HR").mkdir(parents=True)
        Image.fromarray(PHOTO[:40, :48]).save(tmp_path / name / "HR" / "a.png")
    result = cli("evaluate", "--model", NAME, "--data", tmp_path / "Set5" / "HR", tmp_path / "Set14" / "HR", weights=weights)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| Set5 | 1 |" in result.stdout
    evaluation = json.loads((weights / f"eval-{NAME}.json").read_text())["sets"]
    result = cli("model_card", NAME, "--run", tiny_run, "--commit", "abc123", "--command", "python train.py x",
                 weights=weights)
    assert result.returncode == 0, result.stderr[-2000:]
    entry = json.loads((weights / infer.SHIPPED).read_text())[NAME]
    assert entry["sha256"] == utils.sha256_file(exported) and entry["blocks"] == 2
    assert (entry["seed"], entry["commit"], entry["command"], entry["data"]) == (0, "abc123", "python train.py x", "sample")
    assert entry["wall_time"].endswith(" min")
    assert entry["eval"]["Set14"]["model"] == evaluation["Set14"]["model"]
    text = (weights / f"{NAME}.md").read_text()
    assert text == model_card.card(NAME, entry)
    assert f"{evaluation['Set5']['model']['psnr']:.2f} / " in text and entry["sha256"] in text


def test_the_model_cards_say_what_generators_json_says():
    """weights/<name>.md are written from weights/generators.json by model_card.py: never edited apart."""
    for name, entry in infer.shipped_generators().items():
        with open(model_card.card_path(entry)) as f:
            assert f.read() == model_card.card(name, entry), f"run: python model_card.py ({name})"
    gitignore = open(os.path.join(ROOT, ".gitignore")).read().splitlines()
    for entry in infer.shipped_generators().values():
        for file in (entry["file"], os.path.basename(model_card.card_path(entry))):
            assert f"!/weights/{file}" in gitignore


def shipped_file(name):
    """The path of the real shipped generator `name`, or a skip saying it is not in this checkout yet."""
    entry = infer.shipped_generators()[name]
    path = os.path.join(infer.WEIGHTS, entry["file"])
    if not os.path.isfile(path):
        pytest.skip(f"{path} is not in this checkout yet (weights/README.md: shipping a generator)")
    return path, entry


@pytest.mark.parametrize("name", ["srresnet", "srgan"])
def test_the_shipped_generators_match_their_checksums_and_cards(name):
    path, entry = shipped_file(name)
    assert utils.sha256_file(path) == entry["sha256"]
    assert infer.read_npz(path)[1] == entry["blocks"]
    assert all(entry[key] is not None for key in ("command", "seed", "commit", "data", "wall_time", "eval"))
    with open(model_card.card_path(entry)) as f:
        assert entry["sha256"] in f.read()


@pytest.mark.parametrize("name", ["srresnet", "srgan"])
def test_the_shipped_generators_beat_bicubic_on_a_held_out_photo(tmp_path, name):
    """As a fresh clone runs them: srgan by infer.py's default, srresnet by name."""
    shipped_file(name)
    hr, lr = metrics.bicubic_pair(PHOTO)
    Image.fromarray(lr).save(tmp_path / "astronaut.png")
    choice = ["--model", name] if name != infer.DEFAULT_MODEL else []
    result = cli("infer", *choice, tmp_path / "astronaut.png", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    sr = np.asarray(Image.open(tmp_path / "out" / "astronaut_x4.png"))
    assert metrics.sr_metrics(sr, hr)[0] > metrics.sr_metrics(metrics.imresize(lr, 4), hr)[0]


def test_the_quick_preset_runs_the_gan_phase_from_the_shipped_srresnet(tmp_path):
    """A newcomer's first training: no pre-training, the shipped SRResNet checked and loaded, then the GAN
    phase; the run says what it does not show."""
    result = cli("train", "--preset", "quick", "--hr-size", "32", "--batch-size", "1", "--gan-iters", "1",
                 "--val-every", "0", "--name", "quick", "--runs-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = infer.shipped_generators()["srresnet"]
    config = json.loads((tmp_path / "quick" / "config.json").read_text())
    assert config["init_from"]["model"] == "srresnet" and config["init_from"]["sha256"] == shipped["sha256"]
    assert config["pretrain_iters"] == 0 and config["grid_weight"] > 0
    assert config["precision"] == ("bf16" if tflib.bf16_cpu() else "fp32")  # the preset's auto, resolved
    last = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "quick")))
    assert int(last.get_tensor("global_step")) == 1 and int(last.get_tensor("phase")) == 2
    assert "not a trained SRGAN" in result.stdout and "--preset cpu" in result.stdout


def test_init_from_starts_a_new_run_from_the_generator_and_records_it(exported, tmp_path):
    """Pre-training skipped (no --pretrain-iters): the first checkpoint, at step 0 in the GAN phase, holds
    exactly the exported weights; config.json records where they came from."""
    result = cli("train", *TINY, "--gan-iters", "1", "--g-ema", "0.9", "--init-from", exported, "--name", "init",
                 "--runs-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sha256 = utils.sha256_file(exported)
    assert f"the generator starts from {exported}, sha256 {sha256}" in result.stdout
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert config["init_from"] == {"model": str(exported), "path": str(exported), "sha256": sha256}
    assert config["pretrain_iters"] == 0
    first = tf.train.load_checkpoint(str(tmp_path / "init" / "model.ckpt-0"))
    assert int(first.get_tensor("phase")) == 1
    weights, _ = infer.read_npz(str(exported))
    for name, a in weights.items():
        np.testing.assert_array_equal(first.get_tensor(name), a, err_msg=name)
        if not name.endswith(("moving_mean", "moving_variance")):  # --g-ema's averages start from them too
            np.testing.assert_array_equal(first.get_tensor(name + "/generator_ema"), a, err_msg=name)


def test_init_from_a_run_keeps_the_pretraining_when_asked(tiny_run, tmp_path):
    result = cli("train", *TINY, "--pretrain-iters", "1", "--pretrain-only", "--init-from", tiny_run, "--name", "again",
                 "--runs-dir", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    checkpoint = tf.train.latest_checkpoint(str(tiny_run))
    assert config["init_from"]["path"] == checkpoint and config["pretrain_iters"] == 1
    files = [f"{checkpoint}.data-00000-of-00001", f"{checkpoint}.index"]
    assert config["init_from"]["sha256"] == utils.sha256_file(*files)


@pytest.mark.parametrize("args, message", [
    (["--init-from", "EXPORTED", "--blocks", "3"], "2 residual blocks, this run's --blocks is 3"),
    (["--init-from", "EXPORTED", "--name", "init", "--resume"], "--init-from starts a new run"),
    (["--preset", "quick", "--blocks", "3"],  # the preset chose the shipped SRResNet: say so
     "srresnet.npz (--preset quick starts from it) has a generator with 16 residual blocks, this run's --blocks is 3"),
])
def test_init_from_refuses_another_architecture_or_a_resumed_run(exported, tmp_path, args, message):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "config.json").write_text("{}")
    args = [str(exported) if arg == "EXPORTED" else arg for arg in args]
    result = cli("train", *TINY, "--runs-dir", tmp_path, *args)
    assert_one_error_line(result, message)
    assert sorted(os.listdir(tmp_path)) == ["init"]


def test_try_it_draws_bicubic_sr_and_hr(exported, tmp_path):
    result = run_script("docs/try_it.py", "--model", exported, "--out", tmp_path / "try_it.png")
    assert result.returncode == 0, result.stderr[-2000:]
    picture = np.asarray(Image.open(tmp_path / "try_it.png"))
    assert picture.shape[1] == 3 * 128 * 3 + 2 * 8  # bicubic | SR | HR, 128-pixel details zoomed 3x, 8-pixel gaps
