"""Validation during training (validation.py, train.py --val-every / --val-dir / --keep-best): the scores
written, the best generator kept across a resume, the warning when batch norm's moving averages drift."""
import json
import os
import shutil
import signal
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import data
import infer
import metrics
import tflib
import train as train_module
import validation
from conftest import run_in_turn
from model import EMA, SRGAN, SRGANConfig, generator
from test_train import train
from tflib import tf, tf1

TINY_VAL = ["--dataset", "sample", "--hr-size", "32", "--blocks", "2", "--save-every", "100", "--sample-every", "100",
            "--val-every", "2"]


def scalars(run_dir, prefix):
    """{tag: {step: value}} of the TensorBoard scalars whose tag starts with `prefix`."""
    series = {}
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("events.out.tfevents"):
            for event in tf1.train.summary_iterator(os.path.join(run_dir, name)):
                for value in event.summary.value:
                    if value.tag.startswith(prefix):
                        series.setdefault(value.tag, {})[event.step] = value.simple_value
    return series


def val_lines(run_dir):
    with open(run_dir / "val.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def validated(tmp_path_factory, vgg_weights):
    """A pre-training validated at steps 2, 4 and 5 (its end), keeping the best by PSNR."""
    runs = tmp_path_factory.mktemp("runs")
    result = train(*TINY_VAL, "--pretrain-iters", "5", "--pretrain-only", "--keep-best", "psnr",
                   "--name", "v", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    return runs / "v", result


def test_validation_scores_go_to_the_log_jsonl_and_tensorboard(validated):
    run_dir, result = validated
    assert "2 validation images, 2 of them left out of the training images" in result.stdout
    assert f"{len(data.SAMPLE_IMAGES) - 2} training images" in result.stdout
    assert "validation at step 2: PSNR" in result.stdout
    lines = val_lines(run_dir)
    assert [line["step"] for line in lines] == [2, 4, 5]
    board = scalars(run_dir, "val/")
    for line in lines:
        assert line["bn_gap_db"] == pytest.approx(line["psnr_batch_stats"] - line["psnr"])
        assert 5 < line["psnr"] < 40 and 0 < line["ssim"] < 1 and line["vgg"] > 0 and np.isfinite(line["niqe"])
        assert line["images"] == list(validation.VAL_SETS["skimage2"])  # which photos: another --val-dir scores others
        for name in (*validation.SCORES, "bn_gap_db"):
            assert board[f"val/{name}"][line["step"]] == pytest.approx(line[name], rel=1e-5)
    assert set(scalars(run_dir, "health/bn_ok")["health/bn_ok"]) == {2, 4, 5}


def test_validation_scores_are_evaluates_protocol_on_the_centre_crops(validated):
    """The generator kept in best/, run as infer.py runs it on the validation crops, scores what best.json says."""
    run_dir, _ = validated
    best = json.loads((run_dir / "best" / "best.json").read_text())
    lines = val_lines(run_dir)
    top = max(lines, key=lambda line: line["psnr"])
    assert (best["metric"], best["step"], best["value"]) == ("psnr", top["step"], top["psnr"])
    assert sorted(os.listdir(run_dir / "best")) == sorted(
        ["best.json", "checkpoint", "config.json", f"model.ckpt-{top['step']}.data-00000-of-00001",
         f"model.ckpt-{top['step']}.index"])
    upscaler = infer.Upscaler(str(run_dir / "best"))
    pairs = validation.load_pairs(validation.set_paths("skimage2"))
    assert all(hr.shape[:2] == (validation.CROP, validation.CROP) for hr, _ in pairs)
    psnr = np.mean([metrics.sr_metrics(upscaler.upscale(lr), hr)[0] for hr, lr in pairs])
    upscaler.close()
    assert psnr == pytest.approx(best["value"], abs=1e-3)  # a pixel may round the other way


def test_a_resumed_run_keeps_validating_and_keeps_the_best_of_all(validated, tmp_path):
    run_dir, _ = validated
    copy = tmp_path / "v"
    shutil.copytree(run_dir, copy)
    result = train("--name", "v", "--runs-dir", str(tmp_path), "--resume", "--gan-iters", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = val_lines(copy)
    assert [line["step"] for line in lines] == [2, 4, 5, 6, 7]
    best = json.loads((copy / "best" / "best.json").read_text())
    assert best["step"] == max(lines, key=lambda line: line["psnr"])["step"]
    photos = validation.set_paths(json.loads((copy / "config.json").read_text())["val_set"])
    assert best["pixels_sha256"] == validation.pixels_sha256(validation.load_pairs(photos))


def test_the_discriminators_warm_up_does_not_validate_the_generator_it_leaves_alone(tmp_path, vgg_weights):
    result = train(*TINY_VAL, "--val-every", "1", "--pretrain-iters", "2", "--d-warmup-iters", "2", "--gan-iters", "3",
                   "--name", "w", "--runs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line["step"] for line in val_lines(tmp_path / "w")] == [1, 2, 5]


def test_a_validation_sets_identity_is_its_pixels_in_order():
    hr = np.zeros((8, 8, 3), np.uint8)
    pairs = [(hr, None), (hr + 1, None)]
    assert validation.pixels_sha256(pairs) == validation.pixels_sha256([(a.copy(), b) for a, b in pairs])
    touched = hr.copy()
    touched[7, 7, 2] = 1
    assert validation.pixels_sha256([(touched, None), pairs[1]]) != validation.pixels_sha256(pairs)
    assert validation.pixels_sha256(pairs[::-1]) != validation.pixels_sha256(pairs)
    assert validation.pixels_sha256([(hr.reshape(4, 16, 3), None), pairs[1]]) != validation.pixels_sha256(pairs)


@pytest.fixture(scope="module")
def validator(vgg_weights):
    pairs = validation.load_pairs(validation.set_paths("skimage2")[:1])
    v = validation.Validator([(hr[:64, :64], lr[:16, :16]) for hr, lr in pairs], 1, vgg_weights)
    rng = np.random.default_rng(0)
    v([(1 + rng.uniform(0, 0.1, var.shape) if "variance" in var.op.name else rng.normal(0, 0.05, var.shape))
       .astype(np.float32) for var in v.variables])
    with v.graph.as_default():  # not eager, as in train.py: the Saver needs that
        yield v
    v.close()


def test_under_onednn_validation_runs_each_image_twice_and_scores_it_as_once(validator, monkeypatch):
    """Two copies dodge oneDNN's slow batch of one; each copy's batch statistics are the image's own."""
    assert validator.copies == (2 if tflib.onednn_enabled() else 1)
    values = validator.sess.run(validator.variables)
    scores = []
    for copies in (1, 2):
        monkeypatch.setattr(validator, "copies", copies)
        scores.append(validator(values))
    assert scores[0]["psnr_batch_stats"] != pytest.approx(scores[0]["psnr"], abs=0.01)  # two generators
    for name in ("psnr", "ssim", "vgg", "grid", "psnr_batch_stats"):
        assert scores[1][name] == pytest.approx(scores[0][name], rel=1e-4, abs=1e-4), name


PHOTOS, PIXELS = ["chelsea.png", "coffee.png"], "0" * 64


def test_the_best_generator_survives_a_resume_and_a_save_cut_short(validator, tmp_path):
    best = validation.BestGenerator(str(tmp_path), "psnr", PHOTOS, PIXELS)
    assert best.better(20.0) and not best.better(float("nan"))
    best.keep(validator, 2, 20.0, {"blocks": 1})
    assert not best.better(19.0) and not best.better(20.0) and best.better(21.0)
    best.keep(validator, 4, 21.0, {"blocks": 1})
    folder = tmp_path / "best"
    assert sorted(p.name for p in folder.glob("model.ckpt-*")) == ["model.ckpt-4.data-00000-of-00001", "model.ckpt-4.index"]
    # a stop in the middle of the next save: its files written, the checkpoint state moved on, best.json not yet
    validator.saver.save(validator.sess, str(folder / "model.ckpt"), global_step=6, write_meta_graph=False)
    (folder / "model.ckpt-8_temp").mkdir()
    assert tf1.train.latest_checkpoint(str(folder)).endswith("model.ckpt-6")

    resumed = validation.BestGenerator(str(tmp_path), "psnr", PHOTOS, PIXELS)
    assert resumed.record == {"metric": "psnr", "value": 21.0, "images": PHOTOS, "pixels_sha256": PIXELS, "step": 4,
                              "checkpoint": "model.ckpt-4"}
    assert sorted(p.name for p in folder.glob("model.ckpt-*")) == ["model.ckpt-4.data-00000-of-00001", "model.ckpt-4.index"]
    assert tf1.train.latest_checkpoint(str(folder)).endswith("model.ckpt-4")
    assert not resumed.better(20.5) and resumed.better(22.0)
    assert validation.BestGenerator(str(tmp_path), "niqe", PHOTOS, PIXELS).better(100.0)  # kept by another score: replaced
    assert validation.BestGenerator(str(tmp_path), "psnr", ["grass.png"], PIXELS).better(0.0)  # on other photos: too
    assert validation.BestGenerator(str(tmp_path), "psnr", PHOTOS, "1" * 64).better(0.0)  # of the same names: too


def test_a_failed_save_leaves_the_kept_generator_as_it_was(validator, tmp_path, monkeypatch):
    best = validation.BestGenerator(str(tmp_path), "psnr", PHOTOS, PIXELS)
    best.keep(validator, 2, 20.0, {"blocks": 1})

    def disk_full(sess, prefix, global_step, write_meta_graph):
        (tmp_path / "best" / f"model.ckpt-{global_step}.index").write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(validator.saver, "save", disk_full)
    with pytest.raises(OSError):
        best.keep(validator, 4, 25.0, {"blocks": 1})
    assert sorted(p.name for p in (tmp_path / "best").glob("model.ckpt-*")) == [
        "model.ckpt-2.data-00000-of-00001", "model.ckpt-2.index"]
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 2


@pytest.mark.parametrize("metric, better, worse", [("psnr", 25.0, 15.0), ("vgg", 0.1, 0.3), ("niqe", 4.0, 9.0)])
def test_better_goes_the_right_way_for_each_score(validator, tmp_path, metric, better, worse):
    best = validation.BestGenerator(str(tmp_path), metric, PHOTOS, PIXELS)
    best.keep(validator, 1, (better + worse) / 2, {"blocks": 1})
    assert best.better(better) and not best.better(worse)


def batch_statistics(validator, lr):
    """{moving-average variable name: value}: batch norm's own statistics of the image `lr`, so that the
    generator on its moving averages computes what it computes on that image's statistics."""
    ops = [op for op in validator.graph.get_operations() if op.type.startswith("FusedBatchNorm") and op.get_attr("is_training")]
    stats = validator.sess.run([op.outputs[1:3] for op in ops], {validator.lr: lr[None] / 127.5 - 1})
    pixels = lr.shape[0] * lr.shape[1]
    values = {}
    for op, (mean, variance) in zip(ops, stats):
        scope = "generator/" + op.name.split("/", 1)[1].rsplit("/", 1)[0]
        values[scope + "/moving_mean"] = mean
        values[scope + "/moving_variance"] = variance * (pixels - 1) / pixels  # the op returns the unbiased one
    return values


def test_the_drift_warning_fires_on_broken_moving_averages_and_not_on_matched_ones(tmp_path, capsys, vgg_weights):
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    shutil.copy(validation.set_paths("skimage2")[0], val_dir)
    cfg, run_dir, _ = train_module.make_config([*TINY_VAL, "--pretrain-iters", "4", "--pretrain-only", "--val-dir",
                                                str(val_dir), "--runs-dir", str(tmp_path), "--name", "d"])
    trainer = train_module.Trainer(cfg, run_dir)
    os.makedirs(run_dir)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with trainer.graph.as_default():
            trainer.train()
            variables = {v.op.name: v for v in trainer.graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
            trainer.validator(trainer.sess.run(trainer.val_sources))
            matched = batch_statistics(trainer.validator, trainer.val_pairs[0][1])
            tflib.set_variables(trainer.sess, {variables[name]: value for name, value in matched.items()})
            trainer.validate(5)
            # run D's collapse: the averages, not the weights, broken
            tflib.set_variables(trainer.sess, {variables[name]: value * 1e-4 for name, value in matched.items()
                                               if name.endswith("moving_variance")})
            trainer.validate(6)
            trainer.writer.flush()
    finally:
        trainer.close()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out = capsys.readouterr().out
    lines = {line["step"]: line for line in val_lines(tmp_path / "d")}
    assert abs(lines[5]["bn_gap_db"]) < 0.01
    assert "warning: at step 5" not in out
    assert lines[6]["bn_gap_db"] > validation.DRIFT_DB and lines[6]["psnr_batch_stats"] == lines[5]["psnr_batch_stats"]
    assert "warning: at step 6 batch norm's moving averages have drifted" in out
    bn_ok = scalars(tmp_path / "d", "health/bn_ok")["health/bn_ok"]
    assert (bn_ok[5], bn_ok[6]) == (1.0, 0.0)


def test_validation_flags_are_checked(tmp_path):
    (tmp_path / "small").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small" / "tiny.png")
    keep_best, small, absent = run_in_turn([("train.py", *TINY_VAL, *args, "--runs-dir", tmp_path) for args in (
        ["--val-every", "0", "--keep-best", "niqe"], ["--val-dir", tmp_path / "small"], ["--val-dir", tmp_path / "absent"])])
    assert keep_best.returncode != 0 and "error: --keep-best needs validation" in keep_best.stderr
    assert small.returncode != 0 and "Traceback" not in small.stderr
    assert "is 8x8: it needs at least 16 pixels a side" in small.stderr
    assert absent.returncode != 0 and f"error: --val-dir {tmp_path / 'absent'} is not a directory" in absent.stderr
    assert not any(p.name != "small" for p in tmp_path.iterdir())  # nothing written


def test_the_cpu_preset_validates_both_phases_on_eight_photos_left_out_of_training(tmp_path, vgg_weights):
    """--preset cpu: --val-set skimage8 in the pre-training and in its resumed GAN phase (config.json keeps it)."""
    cfg, run_dir, _ = train_module.make_config(["--preset", "cpu", "--dataset", "sample", "--runs-dir", str(tmp_path),
                                                "--name", "r"])
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    resumed, _, _ = train_module.make_config(["--name", "r", "--runs-dir", str(tmp_path), "--resume"])
    for config in (cfg, resumed):
        trainer = object.__new__(train_module.Trainer)  # only its input checks
        trainer.cfg = config
        paths, _ = trainer.check_inputs()
        assert trainer.val_images == list(validation.VAL_SETS["skimage8"]) and len(trainer.val_pairs) == 8
        assert sorted(os.path.basename(p) for p in paths) == sorted(set(data.SAMPLE_IMAGES) - set(trainer.val_images))


def test_validation_photos_of_one_name_in_a_val_dir_tree_are_told_apart(tmp_path):
    """val.jsonl and best.json name each photo by its path in --val-dir, not by its file name alone."""
    photos = np.random.RandomState(0).randint(0, 256, (2, 40, 40, 3), np.uint8)
    for folder, photo in zip(("a", "b"), photos):
        (tmp_path / "val" / folder).mkdir(parents=True)
        Image.fromarray(photo).save(tmp_path / "val" / folder / "photo.png")
    cfg, _, _ = train_module.make_config(["--dataset", "sample", "--val-dir", str(tmp_path / "val"),
                                          "--runs-dir", str(tmp_path), "--name", "r"])
    trainer = object.__new__(train_module.Trainer)  # only its input checks
    trainer.cfg = cfg
    trainer.check_inputs()
    assert trainer.val_images == [os.path.join("a", "photo.png"), os.path.join("b", "photo.png")]
    assert [hr.shape for hr, _ in trainer.val_pairs] == [(40, 40, 3)] * 2


@pytest.mark.parametrize("g_ema", [0.0, 0.999])
def test_validation_scores_the_moving_average_of_the_generators_weights_when_there_is_one(g_ema):
    """Validator.sources: what the validation graph's generator variables are copied from (--g-ema: the averages)."""
    training = tf.Graph()
    with training.as_default():
        lr, hr = tf1.placeholder(tf.float32, [1, 8, 8, 3]), tf1.placeholder(tf.float32, [1, 32, 32, 3])
        SRGAN(lr, hr, SRGANConfig(blocks=2, content_loss="mse", g_ema=g_ema))
    with tf.Graph().as_default():
        generator(tf1.placeholder(tf.float32, [1, None, None, 3]), 2, training=False)
        variables, weights = tf1.global_variables(), {v.op.name for v in tf1.trainable_variables()}
    sources = validation.Validator.sources(SimpleNamespace(variables=variables), training)
    assert len(weights) == 33 and len(variables) == 33 + 2 * 5  # and 5 batch norms' moving mean and variance
    for variable, source in zip(variables, sources):
        averaged = g_ema and variable.op.name in weights
        assert source.op.name == variable.op.name + ("/" + EMA if averaged else "")
