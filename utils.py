"""The small things every command needs: one-line command-line errors, atomic file writes, PNGs and image grids."""
import argparse
import hashlib
import json
import os
import signal
import struct
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CLIError(Exception):
    """A problem with the user's input; str(e) is one line saying what is wrong."""


class Stopped(Exception):
    """A signal stopped the command; args[0] is its number."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals():
    """Makes SIGINT, SIGTERM and SIGHUP raise Stopped wherever the command is, so that the cleanup on the
    way out (write_atomic's) removes what was half written; further signals are ignored while it does."""
    def stop(signum, frame):
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, stop)


def printable_output():
    """Makes stdout and stderr escape what their encoding cannot hold (a file name that is not valid UTF-8,
    say) instead of raising UnicodeEncodeError in the middle of a command."""
    for stream in (sys.stdout, sys.stderr):
        if stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def check_folder(path, flag):
    """CLIError unless `path` is a folder or could be made one: a file there, or above it, is not replaced."""
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CLIError(f"{flag} {path}: {parent} is a file, not a folder")


def output_paths(sources, out_dir, suffix):
    """{input: out_dir/<its subfolder>/<its name without extension><suffix>} for (folder, input) pairs, an
    input found under `folder` keeping the subfolder it is in; CLIError, before anything is written, when
    two inputs would share an output or an output would replace one of the inputs."""
    outputs, taken = {}, {}
    inputs = {os.path.realpath(path) for _, path in sources}
    for folder, path in sources:
        subfolder = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(folder))
        out = os.path.normpath(os.path.join(out_dir, subfolder, os.path.splitext(os.path.basename(path))[0] + suffix))
        if out in taken:
            raise CLIError(f"{taken[out]} and {path} would both be written to {out}: rename one of them, "
                           "or give them separate output folders")
        if os.path.realpath(out) in inputs:
            raise CLIError(f"{out} is one of the inputs, which an output never replaces: choose another output folder")
        outputs[path], taken[out] = out, path
    return outputs


def report_stop(stopped):
    """The one line a stopped command prints; returns its exit code, 128 + the signal's number."""
    signum = stopped.args[0]
    print(f"{signal.Signals(signum).name}: stopped; the outputs finished before are kept, nothing half-written is left",
          file=sys.stderr)
    return 128 + signum


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line ("error: ...") instead of usage + error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def first_line(error):
    """The first line of an exception's message that says what went wrong: TensorFlow's OpErrors start
    with "Graph execution error:" and a blank line before the reason."""
    lines = [line.strip() for line in (getattr(error, "message", None) or str(error)).splitlines()]
    lines = [line for line in lines if line and line != "Graph execution error:"]
    return lines[0] if lines else type(error).__name__


def write_atomic(path, write):
    """Create `path` by calling write(binary file) on a temporary file in the same folder, renamed at the end."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sha256_file(*paths):
    """Hex sha256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_json(path, what):
    """The JSON in `path`, else CLIError naming it and `what` it is (e.g. "which lists the shipped generators")."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read {path}, {what}: {e}") from None


def write_json(path, data):
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def to_uint8(images):
    """[-1, 1] floats -> uint8 [0, 255], rounded and clipped."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def save_grid(path, rows):
    """Write images in [-1, 1] as a PNG grid: rows[r][c] at row r, column c, top-left in its cell.

    Cells are as big as the largest image, smaller images are padded with black. The PNG is written to
    a temporary file next to `path` and renamed, so a viewer never sees a half-written file.
    """
    rows = [[to_uint8(image) for image in row] for row in rows]
    h = max(image.shape[0] for row in rows for image in row)
    w = max(image.shape[1] for row in rows for image in row)
    grid = np.zeros((h * len(rows), w * max(map(len, rows)), 3), np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[r * h:r * h + image.shape[0], c * w:c * w + image.shape[1]] = image
    write_atomic(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))


def save_comparison(path, lr, bicubic, sr, hr, zoom=3):
    """PNG of uint8 RGB images: LR (pixels enlarged) | bicubic | SR | HR, and below, their central third zoomed `zoom` x."""
    scale = hr.shape[0] // lr.shape[0]
    images = [np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1), bicubic, sr, hr]
    h, w = hr.shape[:2]
    top, left = (h - h // zoom) // 2, (w - w // zoom) // 2
    crops = [np.repeat(np.repeat(x[top:top + h // zoom, left:left + w // zoom], zoom, 0), zoom, 1) for x in images]
    save_grid(path, [[x / 127.5 - 1 for x in images], [x / 127.5 - 1 for x in crops]])


def write_png(path, pixels, rows_per_chunk=256):
    """Write [h, w, c] uint8/uint16 (c = 1..4) as PNG through a temporary file renamed at the end.

    Encoded here, a few rows at a time with PNG's Sub filter, so a huge output is never copied
    whole (PIL would hold a second, 4-byte-per-pixel copy) and 16-bit colour works.
    """
    h, w, c = pixels.shape
    depth = pixels.dtype.itemsize * 8
    pixel_bytes = c * pixels.dtype.itemsize

    def chunk(f, kind, data):
        f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    def write(f):
        f.write(PNG_SIGNATURE)
        chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0))
        compressor = zlib.compressobj(6)
        for top in range(0, h, rows_per_chunk):
            rows = pixels[top:top + rows_per_chunk]
            raw = rows.astype(rows.dtype.newbyteorder(">")).reshape(len(rows), -1).view(np.uint8)
            filtered = np.empty((len(rows), raw.shape[1] + 1), np.uint8)
            filtered[:, 0] = 1  # Sub: each byte minus the same byte of the pixel to its left
            filtered[:, 1:pixel_bytes + 1] = raw[:, :pixel_bytes]
            filtered[:, pixel_bytes + 1:] = raw[:, pixel_bytes:] - raw[:, :-pixel_bytes]
            chunk(f, b"IDAT", compressor.compress(filtered.tobytes()))
        chunk(f, b"IDAT", compressor.flush())
        chunk(f, b"IEND", b"")

    write_atomic(path, write)
