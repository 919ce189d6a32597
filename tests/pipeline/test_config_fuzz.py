"""The configuration fuzzer (issue #31): random configurations drawn from each
key's declared domain (`smoe config --keys --json`: type, range, accepted
names) and a little beyond it (the bounds, one past them, zero, negative,
huge, the wrong type, another registry's names, a typo), each trained on a
tiny Fashion-MNIST subset with one-epoch stages. The property of every case:

    refused at load, in one line, with no run folder created;
    or the run completes and its report is valid.

A run that fails after creating its folder, prints more than one error line,
dies by a signal or hangs breaks the property. CI runs a fixed set of seeds
(SMOE_CONFIG_FUZZ_CASES, default 24, from SMOE_CONFIG_FUZZ_SEED, default 0);
more by hand:
    SMOE_CONFIG_FUZZ_CASES=300 SMOE_CONFIG_FUZZ_SEED=1000 /usr/bin/python3 tests/pipeline/test_config_fuzz.py
A failing case prints the command that reproduces it.
"""
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import tempfile
import unittest

SRC = os.environ.get("SMOE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BIN = os.environ.get("SMOE_BIN", os.path.join(SRC, "build/bin"))
SMOE = os.path.join(BIN, "smoe")
FASHION = "/usr/share/datasets/fashion-mnist"
CASES = int(os.environ.get("SMOE_CONFIG_FUZZ_CASES", "24"))
SEED = int(os.environ.get("SMOE_CONFIG_FUZZ_SEED", "0"))
HANG = 600  # hang detection only: a case takes seconds

# Every case starts from this: tiny data, tiny models, one epoch per stage.
BASE = ["seed=1", "data.limit_train=300", "data.limit_test=100", "model.width=4", "base.epochs=1",
        "base.bn_calibration=256", "gate.epochs=1", "experts.epochs=1", "ensembler.epochs=1", "joint.epochs=1",
        "distill.epochs=1", "finetune.epochs=1", "pseudo.steps=20", "cluster.restarts=1", "cluster.max_iter=10",
        "eval.timing_samples=0", "cluster.silhouette_sample=100", "runtime.threads=1", "runtime.log_every=1000"]

# Keys not fuzzed: where the data and checkpoints are (their checks have
# tests of their own), and the stall timeout (a tiny one ends a healthy
# run on purpose).
SKIP = {"data.path", "data.train_split", "data.test_split", "base.checkpoint", "cluster.features",
        "runtime.stall_timeout_s", "runtime.threads", "seed"}
# Keys whose in-domain values scale a case's cost: drawn up to this bound.
COST = {"epochs": 2, "batch_size": 128, "count": 6, "restarts": 2, "max_iter": 20, "steps": 40,
        "expert_epochs": 2, "width": 8, "hidden": 32, "dim": 32, "timing_samples": 50, "bn_calibration": 300,
        "silhouette_sample": 200, "limit_train": 400, "limit_test": 150, "k_max": 8, "fuse": 3, "micro_batch": 64,
        "prefetch": 4, "cache_mb": 64, "warmup_epochs": 2, "memory_budget_mb": 64, "device_memory_budget_mb": 64,
        "depth": 18, "top_k": 6}
# Keys where a value far from the default is a legitimate but useless
# experiment (a learning rate of 1e6 diverges): drawn inside a sane range only.
SANE = {"lr": (1e-4, 0.5), "momentum": (0.0, 0.99), "weight_decay": (0.0, 1e-2), "temperature": (0.01, 10.0),
        "grad_clip": (0.0, 5.0), "margin": (0.1, 2.0), "mixup": (0.0, 1.0), "gate_lr_scale": (0.1, 10.0),
        "label_smoothing": (0.0, 0.5), "step_gamma": (0.01, 1.0), "importance": (0.0, 1.0),
        "load_balance": (0.0, 1.0), "similarity_same": (0.0, 1.0), "similarity_diff": (0.0, 1.0),
        "diversity": (0.0, 1.0)}


def leaf(key):
    return key.rsplit(".", 1)[-1]


def draw_number(rng, k, integer):
    lo, hi = k["min"], k["max"]
    name = leaf(k["key"])
    if name in SANE:
        a, b = SANE[name]
        lo = a if lo is None else max(lo, a)
        hi = b if hi is None else min(hi, b)
    cap = COST.get(name)
    top = hi if hi is not None else (cap if cap is not None else (lo or 0) + 10)
    if cap is not None:
        top = min(top, cap)
    bottom = lo if lo is not None else 0
    inside = rng.uniform(bottom, max(bottom, top))
    if integer:
        lo = None if lo is None else int(lo)
        hi = None if hi is None else int(hi)
    if integer:
        inside = int(math.ceil(inside)) if k["min_exclusive"] else int(round(inside))
    elif k["min_exclusive"] and inside <= bottom:
        inside = bottom + 1e-3
    beyond = [0, -1]
    if lo is not None:
        beyond.append(lo - 1 if integer else lo - 1e-3)
        if not k["min_exclusive"]:
            beyond.append(lo)  # the bound itself is accepted
    if hi is not None:
        beyond += [hi, hi + 1 if integer else hi + 1e-3]
    if cap is None and name not in SANE:
        beyond.append(10**12 if integer else 1e12)
    return inside if rng.random() < 0.8 else rng.choice(beyond)


def draw(rng, k, names_of):
    """A YAML value text for key k: mostly inside its domain, sometimes just
    beyond it, sometimes of the wrong type."""
    t = k["type"]
    if rng.random() < 0.04:
        return rng.choice(["abc", "[1, 2]", "{a: 1}", "''", "1.5", "true"])
    if t == "bool":
        return rng.choice(["true", "false"])
    if t in ("int", "float"):
        return json.dumps(draw_number(rng, k, t == "int"))
    if t in ("list of int", "list of float"):
        n = rng.choice([0, 1, 2, 3])
        return json.dumps([draw_number(rng, k, t == "list of int") for _ in range(n)])
    accepted = k["accepted"]
    others = [rng.choice(names_of), (accepted[0] + "x") if accepted else "x"]  # another registry's name, a typo

    def one():
        return rng.choice(accepted) if accepted and rng.random() < 0.85 else rng.choice(others)
    if t == "list of string":
        return json.dumps([one() for _ in range(rng.choice([0, 1, 2, 4]))])
    return json.dumps(one() if accepted else rng.choice(["", "x", "a b"]))


def make_case(rng, keys, schemes, names_of):
    sets = list(BASE)
    scheme = rng.choice(schemes)
    sets.append("scheme=" + scheme)
    if scheme == "em":
        sets.append("em.steps=1")  # scheme em runs at least one round (a key of its own may override it)
    for k in rng.sample(keys, 3):
        sets.append("%s=%s" % (k["key"], draw(rng, k, names_of)))
    return sets


def check_case(run, result):
    """The property; returns what broke it ('' when it holds)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("smoe: error")]
    if result.returncode == 0:
        try:
            with open(os.path.join(run, "report.json")) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            return "exit 0 but no valid report.json (%s)" % e
        accuracies = []

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "accuracy":
                        accuracies.append(value)
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(report)
        if not accuracies:
            return "the report holds no accuracy"
        bad = [a for a in accuracies if not isinstance(a, (int, float)) or not 0 <= a <= 1]
        return "accuracies outside [0, 1]: %s" % bad[:3] if bad else ""
    if result.returncode < 0:
        return "killed by signal %d" % -result.returncode
    if len(errors) != 1:
        return "%d error lines (expected 1)" % len(errors)
    if os.path.exists(run):
        return "failed after creating the run folder: %s" % errors[0]
    return ""


@unittest.skipUnless(os.path.isdir(FASHION), "dataset-fashion-mnist is not installed")
class ConfigFuzz(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="smoe-config-fuzz-")
        cls.data = os.path.join(cls.tmp, "fmnist")
        subprocess.run([os.path.join(BIN, "smoe-data"), "convert", "fashion-mnist", FASHION, cls.data],
                       check=True, capture_output=True)
        reference = json.loads(subprocess.run([SMOE, "config", "--keys", "--json"], check=True,
                                              capture_output=True, text=True).stdout)
        cls.keys = [k for k in reference if k["key"] not in SKIP and k["key"] != "scheme"]
        cls.schemes = next(k for k in reference if k["key"] == "scheme")["accepted"]
        cls.names = sorted({n for k in reference for n in k["accepted"]})

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def train(self, run, sets, env=None):
        cmd = [SMOE, "train", "--run-dir", run, "-q", "--set", "data.path=" + self.data]
        for s in sets:
            cmd += ["--set", s]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG, env=env)
        return cmd, result

    def test_every_configuration_is_refused_at_load_or_runs_to_a_valid_report(self):
        broken, refused, completed = [], 0, 0
        for i in range(CASES):
            rng = random.Random(SEED + i)
            sets = make_case(rng, self.keys, self.schemes, self.names)
            run = os.path.join(self.tmp, "case-%d" % (SEED + i))
            cmd, result = self.train(run, sets)
            why = check_case(run, result)
            if why:
                broken.append("case %d: %s\n  %s\n  %s" % (SEED + i, why, " ".join(map(shlex.quote, cmd)),
                                                          result.stderr.strip()[-600:]))
            elif result.returncode == 0:
                completed += 1
            else:
                refused += 1
            shutil.rmtree(run, ignore_errors=True)
        print("config fuzz: %d cases from seed %d: %d refused at load, %d completed, %d broke the property"
              % (CASES, SEED, refused, completed, len(broken)))
        self.assertEqual(broken, [], "\n".join(broken))

    def test_the_property_catches_a_failure_after_the_folder_exists(self):
        # A valid configuration made to fail late (SMOE_FAULT at the cluster
        # stage: what an unchecked constraint does) breaks the property; the
        # same configuration without the fault keeps it.
        run = os.path.join(self.tmp, "planted")
        env = dict(os.environ, SMOE_FAULT="stage:cluster")
        _, result = self.train(run, BASE, env=env)
        self.assertTrue(check_case(run, result).startswith("failed after creating the run folder"),
                        result.stderr)
        shutil.rmtree(run)
        _, result = self.train(run, BASE)
        self.assertEqual(check_case(run, result), "", result.stderr)


if __name__ == "__main__":
    unittest.main()
