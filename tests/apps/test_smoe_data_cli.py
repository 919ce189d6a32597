"""smoe-data from the command line: conversion of the real Fashion-MNIST
files, interop with h5py, and every bad input ending in one exact line on
stderr, a non-zero exit and nothing half-written."""
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import h5py
import numpy as np

BIN = os.environ.get("SMOE_BIN", os.path.join(os.path.dirname(__file__), "../../build/bin"))
SMOE_DATA = os.path.join(BIN, "smoe-data")
FASHION = "/usr/share/datasets/fashion-mnist"


def run(*args):
    return subprocess.run([SMOE_DATA, *args], capture_output=True, text=True, timeout=600)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def idx(dims, data):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + bytes(data)


class Tmp(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="smoe-cli-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def assertFailsWith(self, result, expected_line):
        self.assertNotEqual(result.returncode, 0, result.stdout)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertEqual(lines[0], "smoe-data: error: " + expected_line)

    def assertNothingWritten(self, out):
        self.assertFalse(os.path.exists(out))
        leftovers = [n for n in os.listdir(os.path.dirname(out)) if ".tmp-" in n]
        self.assertEqual(leftovers, [])


@unittest.skipUnless(os.path.isdir(FASHION), "dataset-fashion-mnist is not installed")
class FashionMnist(Tmp):
    def test_convert_inspect_verify_and_read_with_h5py(self):
        out = self.path("fmnist")
        r = run("convert", "fashion-mnist", FASHION, out, "--shard-size", "25000")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("converted 70000 images", r.stdout)
        manifest = json.loads(read(os.path.join(out, "manifest.json")))
        self.assertEqual(manifest["num_classes"], 10)
        self.assertEqual(manifest["image_shape"], [1, 28, 28])
        self.assertEqual([s["count"] for s in manifest["splits"]["train"]["shards"]], [25000, 25000, 10000])

        # Counts and a pixel-exact sample against the idx source, read by h5py.
        with gzip.open(os.path.join(FASHION, "train-images-idx3-ubyte.gz")) as f:
            src_images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(os.path.join(FASHION, "train-labels-idx1-ubyte.gz")) as f:
            src_labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        total = 0
        for shard in manifest["splits"]["train"]["shards"]:
            with h5py.File(os.path.join(out, shard["file"]), "r") as h:
                images, labels = h["images"], h["labels"]
                self.assertEqual(images.dtype, np.uint8)
                self.assertEqual(labels.dtype, np.int64)
                self.assertEqual(images.shape, (shard["count"], 1, 28, 28))
                self.assertIsNotNone(images.chunks)
                total += images.shape[0]
                # global id = shard offset + index inside the shard
                for local in (0, 1234, shard["count"] - 1):
                    gid = shard["offset"] + local
                    np.testing.assert_array_equal(images[local, 0], src_images[gid])
                    self.assertEqual(labels[local], src_labels[gid])
            self.assertEqual(hashlib.sha256(read(os.path.join(out, shard["file"]))).hexdigest(),
                             shard["sha256"])
        self.assertEqual(total, 60000)

        r = run("inspect", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("split train  60000 samples in 3 shards", r.stdout)
        self.assertIn("Ankle boot", r.stdout)
        r = run("verify", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ok: 4 shards, 70000 samples", r.stdout)

        # Same input and flags: byte-identical output.
        again = self.path("again")
        self.assertEqual(run("convert", "fashion-mnist", FASHION, again, "--shard-size", "25000").returncode, 0)
        for name in os.listdir(out):
            self.assertEqual(read(os.path.join(out, name)), read(os.path.join(again, name)), name)


class BadInputs(Tmp):
    def make_source(self, n_train=30, n_test=10, labels=None, image_dims=None):
        src = self.path("src")
        os.makedirs(src, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            pixels = [(i * 3) % 256 for i in range(n * 784)]
            dims = image_dims if (image_dims and prefix == "train") else [n, 28, 28]
            with gzip.open(os.path.join(src, prefix + "-images-idx3-ubyte.gz"), "wb") as f:
                f.write(idx(dims, pixels))
            lab = labels if (labels is not None and prefix == "train") else [i % 10 for i in range(n)]
            with gzip.open(os.path.join(src, prefix + "-labels-idx1-ubyte.gz"), "wb") as f:
                f.write(idx([len(lab)], lab))
        return src

    def convert(self, src, out, *flags):
        return run("convert", "mnist", src, out, *flags)

    def test_truncated_gzip(self):
        src = self.make_source()
        p = os.path.join(src, "train-images-idx3-ubyte.gz")
        data = read(p)
        write(p, data[: len(data) // 2])
        out = self.path("out")
        r = self.convert(src, out)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, "^smoe-data: error: " + p + r": truncated: ended after \d+ of 23520 bytes of the idx data\n$")
        self.assertNothingWritten(out)

    def test_corrupted_gzip(self):
        src = self.make_source()
        p = os.path.join(src, "train-images-idx3-ubyte.gz")
        data = bytearray(read(p))
        data[len(data) // 2] ^= 0x5A
        write(p, bytes(data))
        out = self.path("out")
        r = self.convert(src, out)
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.startswith("smoe-data: error: " + p + ": corrupted"), r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertNothingWritten(out)

    def test_wrong_magic(self):
        src = self.make_source()
        p = os.path.join(src, "t10k-labels-idx1-ubyte.gz")
        with gzip.open(p, "wb") as f:
            f.write(bytes([0, 0, 9, 1]) + (10).to_bytes(4, "big") + bytes(10))
        out = self.path("out")
        self.assertFailsWith(self.convert(src, out),
                             p + ": wrong idx magic 0x00000901, expected 0x00000801 (unsigned bytes, 1 dimension)")
        self.assertNothingWritten(out)

    def test_count_mismatch(self):
        src = self.make_source(labels=[i % 10 for i in range(29)])
        out = self.path("out")
        self.assertFailsWith(self.convert(src, out),
                             "{} holds 30 images but {} holds 29 labels".format(
                                 os.path.join(src, "train-images-idx3-ubyte.gz"),
                                 os.path.join(src, "train-labels-idx1-ubyte.gz")))
        self.assertNothingWritten(out)

    def test_label_out_of_range(self):
        labels = [i % 10 for i in range(30)]
        labels[7] = 42
        src = self.make_source(labels=labels)
        out = self.path("out")
        self.assertFailsWith(self.convert(src, out), os.path.join(src, "train-labels-idx1-ubyte.gz") +
                             ": label 42 of sample 7 is outside [0, 10)")
        self.assertNothingWritten(out)

    def test_existing_output_refused_unless_forced(self):
        src = self.make_source()
        out = self.path("out")
        os.makedirs(out)
        write(os.path.join(out, "mine.txt"), b"precious")
        self.assertFailsWith(self.convert(src, out), "output folder {} already exists (use --force to replace it)".format(out))
        self.assertEqual(read(os.path.join(out, "mine.txt")), b"precious")
        r = self.convert(src, out, "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "mine.txt")))

    def test_flipped_byte_and_missing_shard_caught_by_verify(self):
        src = self.make_source(n_train=40)
        out = self.path("out")
        self.assertEqual(self.convert(src, out, "--shard-size", "16", "--compression", "none").returncode, 0)
        shard = os.path.join(out, "train-00001.h5")
        data = bytearray(read(shard))
        data[len(data) - 200] ^= 0x01
        write(shard, bytes(data))
        r = run("verify", out)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.strip(), r"^smoe-data: error: " + shard + r": checksum mismatch \(sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}\)$")
        os.remove(os.path.join(out, "train-00002.h5"))
        os.remove(shard)
        self.assertFailsWith(run("verify", out), shard + ": shard named in the manifest is missing")

    def test_usage_errors(self):
        r = run("convert", "mnist")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr, "smoe-data: error: the option '--out' is required but missing (see smoe-data --help)\n")
        self.assertFailsWith(run("explode"), "unknown command 'explode' (expected convert, inspect or verify)")
        self.assertFailsWith(run("inspect", self.path("nothing")), "dataset folder {} does not exist".format(self.path("nothing")))
        src = self.make_source()
        self.assertFailsWith(run("convert", "mnist", src, self.path("o"), "--compression", "lz4"),
                             "--compression 'lz4': expected none, gzip or gzip-1 .. gzip-9")
        self.assertFailsWith(run("convert", "mnist", src, self.path("o"), "--shard-size", "0"),
                             "--shard-size must be at least 1, got 0")


if __name__ == "__main__":
    unittest.main()
