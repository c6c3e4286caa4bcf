"""A run directory: the lock that keeps a second train.py out, its checkpoints (the newest intact one; damaged
ones set aside, never deleted) and room on its disk for the ones to come."""
import fcntl
import glob
import os
import shutil
import time

import utils
from tflib import tf, tf1


def check_free_space(run_dir, checkpoint_bytes, kept):
    """utils.CLIError unless the disk of run_dir has room for the checkpoints still to come: two are kept,
    and a third is written before the oldest is deleted."""
    folder = os.path.abspath(run_dir)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free, needed = shutil.disk_usage(folder).free, (3 - kept) * checkpoint_bytes
    if free < needed:
        raise utils.CLIError(f"{folder} has {free / 1e9:.2f} GB free, the checkpoints of this run need "
                             f"{needed / 1e9:.2f} GB ({checkpoint_bytes / 1e9:.2f} GB each): free some space "
                             "or choose another --runs-dir")


def damage(checkpoint):
    """Why `checkpoint` cannot be restored (missing or truncated files, a tensor failing its checksum), or None
    when every tensor in it reads back intact."""
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # the reader raises IndexError, ValueError or an OpError, depending on the damage
        return utils.first_line(e)
    return None


def checkpoints(run_dir):
    """The run's checkpoints, oldest first: those its `checkpoint` file names (its newest too, which a file
    written by hand or by another tool may name alone), or without that file the model.ckpt-* beside it."""
    state = tf1.train.get_checkpoint_state(run_dir)
    if state:
        named = list(state.all_model_checkpoint_paths)
        return named + [state.model_checkpoint_path] if state.model_checkpoint_path not in named else named
    prefixes = [path[:-len(".index")] for path in glob.glob(os.path.join(glob.escape(run_dir), "model.ckpt-*.index"))]
    return sorted(prefixes, key=lambda prefix: int(prefix.rsplit("-", 1)[1]))


def newest_intact_checkpoint(run_dir):
    """(newest intact checkpoint or None, the checkpoints up to it, oldest first, {newer damaged checkpoint: why})."""
    kept = checkpoints(run_dir)
    damaged = {}
    while kept:
        why = damage(kept[-1])
        if why is None:
            return kept[-1], kept, damaged
        damaged[kept.pop()] = why
    if damaged:
        raise utils.CLIError(f"every checkpoint in {run_dir} is damaged: " + "; ".join(f"{c}: {w}" for c, w in damaged.items()))
    return None, [], {}


def set_aside(run_dir, damaged, kept):
    """Moves the files of the damaged checkpoints into run_dir/damaged-<time>/, where saving the same step again
    cannot replace them, and makes the `checkpoint` file name the intact ones. Deletes nothing."""
    folder = os.path.join(run_dir, f"damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(folder)
    for checkpoint in damaged:
        for path in glob.glob(glob.escape(checkpoint) + ".*"):
            os.rename(path, os.path.join(folder, os.path.basename(path)))
    names = [("model_checkpoint_path", kept[-1])] + [("all_model_checkpoint_paths", c) for c in kept]
    state = "".join(f'{key}: "{os.path.basename(c)}"\n' for key, c in names)  # relative, as the Saver writes it
    utils.write_atomic(os.path.join(run_dir, "checkpoint"), lambda f: f.write(state.encode()))
    return folder


def checkpoint_step(checkpoint):
    """The global step saved in a checkpoint, read without building a graph."""
    try:
        return int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step"))
    except (tf.errors.OpError, ValueError) as e:
        raise utils.CLIError(f"cannot read {checkpoint}: {utils.first_line(e)}") from None


def lock_run(run_dir):
    """An exclusive lock on run_dir for the life of this process, else utils.CLIError naming the process that
    holds it. flock is released by the kernel however the process ends, so a crash leaves no stale lock."""
    fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 20).decode(errors="replace").strip()
        os.close(fd)
        raise utils.CLIError(f"{run_dir} is in use by another train.py (process {holder}): wait for it to end, "
                             "or choose another --name") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
