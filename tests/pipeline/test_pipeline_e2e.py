"""smoe train / smoe eval end to end on the quick Fashion-MNIST config, under
mpirun: rank-count invariance, exact resume after SIGKILL, failure handling,
Python interop of the checkpoints, the report's contents and bad inputs."""
import csv
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

import h5py
import numpy as np
import torch

SRC = os.environ.get("SMOE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BIN = os.environ.get("SMOE_BIN", os.path.join(SRC, "build/bin"))
SMOE = os.path.join(BIN, "smoe")
QUICK = os.path.join(SRC, "configs/fmnist-quick.yaml")
FASHION = "/usr/share/datasets/fashion-mnist"
# The tests' fake accelerator (tests/common/fake_accelerator.cpp), preloaded into the ranks.
FAKE_ACCELERATOR = os.path.join(os.environ.get("SMOE_LIB", os.path.join(SRC, "build/lib")),
                                "libsmoe_fake_accelerator.so")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def visible_gpus():
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=HANG).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def mpirun(np):
    return ["mpirun", "-np", str(np), "--oversubscribe"]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_rows(path, n, k):
    """A run folder's per-sample rows (g0.f32, q.f32): float32 [n, k] in id order."""
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(n, k))


def read_text(path):
    with open(path) as f:
        return f.read()


# Timeouts in this file are hang detection only: every command here takes
# seconds to a few minutes on a 2-core machine, so only a hang reaches this
# bound, and no test asserts how fast anything was. Kills, signals and time
# limits happen at named points of the program (SMOE_FAULT, src/pipeline/fault.h).
HANG = 1800


def wait_until_released(*runs):
    """Blocks until no process of a killed job holds the run folders' locks:
    mpirun is reaped at once, its ranks a moment later, later still on a
    loaded machine. A resume started before that would rightly refuse the
    busy folder. A blocking lock: no clock involved."""
    for run in runs:
        with open(run + ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)


def stage_hashes(run):
    """Every sha256 that run.json records for the finished stages: the
    checkpoints and outputs that identify what the run computed (not the
    mid-stage progress snapshots, which are resume bookkeeping taken when
    the clock says)."""
    found = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(prefix + "/" + k, x)
        elif prefix.endswith("sha256") and "/progress/" not in prefix:
            found[prefix] = v
    walk("", read_json(os.path.join(run, "run.json"))["done"])
    return found


@unittest.skipUnless(os.path.isdir(FASHION), "dataset-fashion-mnist is not installed")
class Pipeline(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="smoe-e2e-")
        cls.data = os.path.join(cls.tmp, "fmnist")
        subprocess.run([os.path.join(BIN, "smoe-data"), "convert", "fashion-mnist", FASHION, cls.data],
                       check=True, capture_output=True)
        # Bit-exact results across rank counts need the same threads per rank.
        cls.common = ["--set", "data.path=" + cls.data, "--set", "runtime.threads=1", "-q"]
        cls.runs = {}
        for np in (1, 2, 3, 5):  # 5 ranks: more ranks than experts
            run = os.path.join(cls.tmp, "np%d" % np)
            r = cls.train(np, run)
            assert r.returncode == 0, r.stderr
            cls.runs[np] = run

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def train(cls, np, run, *extra, env=None):
        cmd = mpirun(np) + [SMOE, "train", "--config", QUICK, "--run-dir", run] + cls.common + list(extra)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG, env=env or ENV)

    def read_test_images(self, n):
        """The first n test images (uint8 [n, 1, 28, 28]) and labels of the converted dataset."""
        images, labels = [], []
        for shard in sorted(f for f in os.listdir(self.data) if f.startswith("test-")):
            with h5py.File(os.path.join(self.data, shard), "r") as f:
                images.append(torch.from_numpy(f["images"][:]))
                labels.append(torch.from_numpy(f["labels"][:]).long())
        return torch.cat(images)[:n], torch.cat(labels)[:n]

    def test_rank_count_invariance(self):
        reports = {np: read_json(os.path.join(run, "report.json")) for np, run in self.runs.items()}
        for np in (2, 3, 5):
            self.assertEqual(reports[np]["ranks"], np)
            self.assertEqual(reports[np]["base"], reports[1]["base"])
            self.assertEqual(reports[np]["moe"], reports[1]["moe"])
            self.assertEqual(reports[np]["anytime"], reports[1]["anytime"])
            self.assertEqual(reports[np]["cluster_quality"], reports[1]["cluster_quality"])
            self.assertEqual([e["checkpoint_sha256"] for e in reports[np]["experts"]],
                             [e["checkpoint_sha256"] for e in reports[1]["experts"]])
            self.assertEqual([e["stacking_sha256"] for e in reports[np]["experts"]],
                             [e["stacking_sha256"] for e in reports[1]["experts"]])
        self.assertEqual(reports[3]["runtime"]["devices"], ["cpu", "cpu", "cpu"])
        # With two ranks both of them trained experts.
        self.assertEqual(sorted({e["rank"] for e in reports[2]["experts"]}), [0, 1])
        # Five ranks are more than the base stage's 3 micro-batches per step
        # (96 / 32) and the 4 experts: both stages say so, with the idle share.
        log5 = read_text(os.path.join(self.runs[5], "log.jsonl"))
        self.assertIn("base: 5 ranks but 3 micro-batches per step (base.batch_size 96 / base.micro_batch 32): "
                      "40% of the ranks' time idles", log5)
        self.assertIn("experts: 5 ranks but 4 experts to train (experts.count): 1 rank idles", log5)
        self.assertNotIn("ranks' time idles", read_text(os.path.join(self.runs[3], "log.jsonl")))

    def test_report_contents_and_files(self):
        run = self.runs[2]
        r = read_json(os.path.join(run, "report.json"))
        for key in ("dataset", "num_experts", "ranks", "base", "moe", "anytime", "experts", "stages", "specialisation"):
            self.assertIn(key, r)
        self.assertEqual(r["dataset"], "fashion-mnist")
        self.assertEqual(r["num_experts"], 4)
        for variant in ("no_ensembling", "bagging", "stacking", "top2"):
            self.assertGreater(r["moe"][variant]["accuracy"], 0.5)
            self.assertGreater(r["moe"][variant]["macs"], r["base"]["macs"])
        self.assertGreater(r["moe"]["top2"]["macs"], r["moe"]["bagging"]["macs"])
        for stage in ("base", "embed", "cluster", "gate", "experts", "eval"):
            self.assertGreaterEqual(r["stages"][stage], 0)
        for m in ("gate_entropy", "usage_entropy", "mutual_information"):
            self.assertGreaterEqual(r["specialisation"][m], 0)
        self.assertLessEqual(r["specialisation"]["usage_entropy"], 2.0 + 1e-9)  # log2(4 experts)
        taus = [p["tau"] for p in r["anytime"]]
        self.assertEqual(taus[0], 0.0)
        self.assertEqual(r["anytime"][0]["early_exit_rate"], 0.0)      # tau = 0 runs every expert
        self.assertEqual(r["anytime"][-1]["early_exit_rate"], 1.0)     # tau = 1 exits everything
        self.assertEqual(r["anytime"][-1]["accuracy"], r["base"]["accuracy"])
        macs = [p["macs"] for p in r["anytime"]]
        self.assertEqual(macs, sorted(macs, reverse=True))             # fewer experts as tau grows
        with open(os.path.join(run, "anytime.csv")) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "tau,accuracy,macs,early_exit_rate,mean_experts_per_sample")
        self.assertEqual(len(lines), 1 + len(r["anytime"]))
        # DFCP-MoE's metrics beside the accuracy, the clusters' quality, measured inference times.
        for point in [r["base"]] + list(r["moe"].values()):
            self.assertGreater(point["map"], 0.5)
            self.assertGreater(point["balanced_accuracy"], 0.5)
        q = r["cluster_quality"]
        self.assertEqual(q["rows"], r["train_samples"])
        self.assertEqual(sum(q["sizes"]), q["rows"] - q["outliers"])
        self.assertEqual(sum(map(sum, q["contingency"])), sum(q["sizes"]))
        for key in ("davies_bouldin", "silhouette", "purity", "nmi", "ari", "inertia"):
            self.assertIsInstance(q[key], float, key)
        t = r["inference_time"]
        self.assertEqual((t["samples"], t["batch_size"], t["threads"]), (1000, 500, 1))
        for rule in ("base", "moe_top1", "anytime"):
            self.assertGreater(t["ms_per_sample"][rule], 0)
        for png in ("accuracy_vs_macs.png", "routing.png", "clusters.png"):
            with open(os.path.join(run, png), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertEqual(sum(map(sum, r["routing"])), r["test_samples"])
        with open(os.path.join(run, "log.jsonl")) as f:
            events = [json.loads(line) for line in f]
        self.assertTrue(any(e.get("event") == "stage_done" and e["stage"] == "experts" for e in events))

    def test_checkpoints_open_in_python(self):
        run = self.runs[1]
        base = torch.load(os.path.join(run, "base.pt"))
        self.assertIn("fc.weight", base)
        self.assertEqual(tuple(base["block0.conv.weight"].shape), (8, 1, 3, 3))
        expert = torch.load(os.path.join(run, "experts", "expert-000.pt"))
        self.assertEqual(sorted({k.split(".")[0] for k in expert}), ["block3", "block4", "fc"])
        self.assertEqual(expert["fc.weight"].shape, base["fc.weight"].shape)
        stacking = torch.load(os.path.join(run, "experts", "stacking-000.pt"))
        self.assertEqual(tuple(stacking["linear.weight"].shape), (10, 20))
        gate = torch.load(os.path.join(run, "gate.pt"))
        self.assertEqual(tuple(gate["linear.weight"].shape), (4, 64))  # [experts, pre-logits]
        # g0.f32: float32 [N, K] in id order, each row a distribution over the experts; cluster.pt
        # keeps the centroids it comes from, and no per-sample tensor.
        g0 = read_rows(os.path.join(run, "g0.f32"), 3000, 4)
        self.assertTrue(torch.allclose(g0.sum(1), torch.ones(3000), atol=1e-5))
        cluster = torch.load(os.path.join(run, "cluster.pt"))
        self.assertEqual(tuple(cluster["centroids"].shape), (4, 64))
        self.assertFalse(any(t.dim() > 0 and t.shape[0] == 3000 for t in cluster.values()))
        # embeddings.f32: float32 [N, D + C] in id order; the logits are the base model's head on the pre-logits.
        rows = torch.from_numpy(np.fromfile(os.path.join(run, "embeddings.f32"), dtype="<f4").reshape(3000, 74))
        pre, logits = rows[:, :64], rows[:, 64:]
        self.assertTrue(torch.allclose(pre @ base["fc.weight"].T + base["fc.bias"], logits, atol=1e-4))

    def test_export_reproduces_the_report_in_python(self):
        # smoe export writes one TorchScript file that torch.jit.load reads
        # without smoe. On the run's test samples its predictions reproduce
        # the report, sample counts exact: the base model, the top-1 MoE with
        # the run's ensembler and with none, top-2, and the anytime model at
        # every tau of the report with its early-exit rate, rule and tau set
        # on the loaded module. The file's own conditional compute (an expert
        # runs on its samples only) against the report's dense pass.
        run = self.runs[2]
        report = read_json(os.path.join(run, "report.json"))
        n = report["test_samples"]
        images, labels = self.read_test_images(n)
        files = {}
        for ensembler in ("bagging", "none"):
            files[ensembler] = os.path.join(self.tmp, "export-%s.pt" % ensembler)
            r = subprocess.run([SMOE, "export", "--run-dir", run, "--out", files[ensembler], "--ensembler", ensembler],
                               capture_output=True, text=True, timeout=HANG)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("4 experts, rule anytime", r.stdout)

        def scores(model):
            with torch.no_grad():
                probs, weight, early = model.predict(images)
            self.assertEqual(list(probs.shape), [n, 10])
            self.assertEqual(list(weight.shape), [n, 4])
            return (probs.argmax(1) == labels).double().mean().item(), early.double().mean().item()

        model = torch.jit.load(files["bagging"])
        self.assertEqual(report["ensembler"], "bagging")
        for rule, expected in (("base", report["base"]), ("top1", report["moe"]["bagging"]),
                               ("top2", report["moe"]["top2"])):
            model.rule = rule
            self.assertAlmostEqual(scores(model)[0], expected["accuracy"], places=12, msg=rule)
        model.rule = "anytime"
        for point in report["anytime"]:
            model.tau = point["tau"]
            accuracy, early = scores(model)
            self.assertAlmostEqual(accuracy, point["accuracy"], places=12, msg=point)
            self.assertAlmostEqual(early, point["early_exit_rate"], places=12, msg=point)
        alone = torch.jit.load(files["none"])
        alone.rule = "top1"
        self.assertAlmostEqual(scores(alone)[0], report["moe"]["no_ensembling"]["accuracy"], places=12)
        # Provenance and metadata travel with the file.
        self.assertEqual(model.smoe_run, os.path.abspath(run))
        self.assertEqual(model.classes[0], "T-shirt/top")
        self.assertEqual(model.smoe_trained_commit, report["provenance"]["git_commit"])
        # Refusals: one line, nothing written; an existing file is kept.
        for args, message in ((["--rule", "top3"], "--rule 'top3' is not one of base, top1, top2, anytime"),
                              (["--tau", "1.5"], "--tau must be in [0, 1], got 1.5"),
                              (["--ensembler", "vote"], "--ensembler 'vote' is not one of bagging, stacking, none"),
                              ([], "exists (--force replaces it)")):
            out = files["bagging"] if not args else os.path.join(self.tmp, "refused.pt")
            before = os.path.getmtime(files["bagging"])
            r = subprocess.run([SMOE, "export", "--run-dir", run, "--out", out] + args, capture_output=True,
                               text=True, timeout=HANG)
            self.assertEqual(r.returncode, 1, args)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
            self.assertIn(message, r.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "refused.pt")))
            self.assertEqual(os.path.getmtime(files["bagging"]), before)
        r = subprocess.run([SMOE, "export", "--run-dir", self.tmp, "--out", os.path.join(self.tmp, "refused.pt")],
                           capture_output=True, text=True, timeout=HANG)
        self.assertEqual(r.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "refused.pt")))

    def test_predict_writes_the_same_file_on_one_and_two_ranks_and_the_report_accuracy(self):
        # smoe predict on the run's test samples: each rank writes its own
        # rows at their offsets, and 1 and 2 ranks write the same bytes; the
        # file's accuracy and early exits are the report's at the same tau.
        run = self.runs[2]
        report = read_json(os.path.join(run, "report.json"))
        point = report["anytime"][3]
        outs = {}
        for ranks in (1, 2):
            outs[ranks] = os.path.join(self.tmp, "predict-np%d.h5" % ranks)
            cmd = [SMOE, "predict", "--run-dir", run, "--input", self.data, "--out", outs[ranks], "--limit",
                   str(report["test_samples"]), "--tau", str(point["tau"]), "--probs", "--set", "runtime.threads=1"]
            r = subprocess.run(mpirun(ranks) + cmd, capture_output=True, text=True, timeout=HANG, env=ENV)
            self.assertEqual(r.returncode, 0, r.stderr)
        with open(outs[1], "rb") as a, open(outs[2], "rb") as b:
            self.assertEqual(a.read(), b.read())
        with h5py.File(outs[2], "r") as f:
            self.assertAlmostEqual(f.attrs["accuracy"], point["accuracy"], places=12)
            self.assertEqual(f.attrs["rule"], b"anytime")
            early = f["early_exit"][:]
            self.assertAlmostEqual(early.mean(), point["early_exit_rate"], places=12)
            expert = f["expert"][:]
            self.assertTrue(((expert == -1) == (early == 1)).all())  # an early exit ran no expert
            self.assertTrue(((expert >= -1) & (expert < 4)).all())
            # An early exit answers with the base model's distribution; the
            # others with sum_k g_k e'_k over the active experts (eq. 3,
            # not renormalised), so at most 1.
            sums = f["probs"][:].sum(1)
            self.assertTrue(np.allclose(sums[early == 1], 1, atol=1e-5))
            self.assertTrue((sums <= 1 + 1e-5).all())
            self.assertTrue((f["probs"][:].argmax(1) == f["prediction"][:]).all())
            predicted = {k: f[k][:] for k in ("prediction", "expert", "early_exit")}
        # The exported file, loaded in Python, predicts the same, sample for
        # sample: its class, its expert and its early exit.
        exported = os.path.join(self.tmp, "predict-export.pt")
        r = subprocess.run([SMOE, "export", "--run-dir", run, "--out", exported, "--tau", str(point["tau"])],
                           capture_output=True, text=True, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        images, _ = self.read_test_images(report["test_samples"])
        with torch.no_grad():
            probs, weight, early = torch.jit.load(exported).predict(images)
        top, expert = weight.max(1)
        expert[top == 0] = -1
        self.assertTrue(np.array_equal(probs.argmax(1).numpy(), predicted["prediction"]))
        self.assertTrue(np.array_equal(expert.numpy(), predicted["expert"]))
        self.assertTrue(np.array_equal(early.numpy().astype(np.uint8), predicted["early_exit"]))
        # Bad inputs: one line, no file. Images of another shape (a copy of
        # the dataset whose manifest says 3 channels), a split it lacks, a
        # folder that is no dataset.
        other = os.path.join(self.tmp, "rgb")
        os.makedirs(other, exist_ok=True)
        manifest = read_json(os.path.join(self.data, "manifest.json"))
        manifest["image_shape"] = [3, 28, 28]
        for holder in [manifest] + list(manifest["splits"].values()):  # the pixel statistics: one per channel
            for key in ("mean", "std"):
                if isinstance(holder.get(key), list):
                    holder[key] = holder[key] * 3
        with open(os.path.join(other, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        out = os.path.join(self.tmp, "refused.h5")
        for args, message in (
                (["--input", other], "holds images [3, 28, 28] but the run's model takes [1, 28, 28]"),
                (["--input", self.data, "--split", "valid"], "has no split 'valid'"),
                (["--input", run], "is not a dataset folder (no manifest.json")):
            r = subprocess.run(mpirun(2) + [SMOE, "predict", "--run-dir", run, "--out", out] + args,
                               capture_output=True, text=True, timeout=HANG, env=ENV)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertEqual(len([l for l in r.stderr.splitlines() if "error" in l]), 1, r.stderr)
            self.assertIn(message, r.stderr)
            self.assertFalse(os.path.exists(out))

    def test_joint_scheme_is_rank_count_invariant_and_resumes_exactly_after_sigkill(self):
        # Krishnamurthy et al.'s jointly trained MoE (attentive gate, both
        # regularisers) under mpirun: 1 and 2 ranks give the same weights; a
        # worker killed (SIGKILL) right after epoch 2's checkpoint ends the
        # job, and --resume continues from epoch 3 to the uninterrupted run's
        # weights and report.
        joint = []
        for s in ("scheme=joint", "experts.arch=small_cnn", "experts.branch_after=0", "gate.kind=attentive",
                  "experts.count=3", "model.hidden=[32,16]", "joint.epochs=3", "joint.batch_size=256",
                  "joint.importance=0.2", "joint.similarity_same=0.02", "joint.similarity_diff=0.01"):
            joint += ["--set", s]
        runs = {name: os.path.join(self.tmp, "joint-" + name) for name in ("np1", "np2", "killed")}
        for np, name in ((1, "np1"), (2, "np2")):
            r = self.train(np, runs[name], *joint)
            self.assertEqual(r.returncode, 0, r.stderr)
        sha = {name: read_json(os.path.join(run, "run.json"))["done"].get("joint", {}).get("sha256")
               for name, run in runs.items() if name != "killed"}
        self.assertEqual(sha["np1"], sha["np2"])
        r = self.train(2, runs["killed"], *joint, env=dict(ENV, SMOE_FAULT="kill:joint-epoch-2:1"))
        self.assertNotEqual(r.returncode, 0)
        done = read_json(os.path.join(runs["killed"], "run.json"))["done"]
        self.assertNotIn("joint", done)
        self.assertEqual(done["joint/progress"]["epoch"], 2)
        r = self.train(2, runs["killed"], "--resume", *joint)
        self.assertEqual(r.returncode, 0, r.stderr)
        record = read_json(os.path.join(runs["killed"], "run.json"))["done"]["joint"]
        self.assertEqual(record["resumed_after_epoch"], 2)
        self.assertEqual(record["sha256"], sha["np2"])
        resumed = read_json(os.path.join(runs["killed"], "report.json"))
        reference = read_json(os.path.join(runs["np2"], "report.json"))
        for key in ("mixture", "top1", "top2", "specialisation", "routing"):
            self.assertEqual(resumed[key], reference[key], key)
        # The attentive gate runs every expert: no saving from routing.
        self.assertEqual(reference["top1"]["macs"], reference["mixture"]["macs"])
        # The saved model opens in PyTorch.
        state = torch.load(os.path.join(runs["np2"], "joint.pt"))
        self.assertIn("gate.query.weight", state)
        self.assertIn("expert002.net.out.weight", state)
        # Exported, the jointly trained MoE reproduces its report's mixture,
        # top-1 and top-2 accuracy in Python (every expert on every sample).
        out = os.path.join(self.tmp, "joint-export.pt")
        r = subprocess.run([SMOE, "export", "--run-dir", runs["np2"], "--out", out], capture_output=True, text=True,
                           timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rule mixture, attentive gate", r.stdout)
        images, labels = self.read_test_images(reference["test_samples"])
        model = torch.jit.load(out)
        for rule in ("mixture", "top1", "top2"):
            model.rule = rule
            with torch.no_grad():
                correct = (model(images).argmax(1) == labels).double().mean().item()
            self.assertAlmostEqual(correct, reference[rule]["accuracy"], places=12, msg=rule)
        self.assertEqual(model.smoe_gate_kind, "attentive")
        # smoe predict with it on 2 ranks: the report's mixture accuracy.
        pred = os.path.join(self.tmp, "joint-predict.h5")
        r = subprocess.run(mpirun(2) + [SMOE, "predict", "--run-dir", runs["np2"], "--input", self.data, "--out", pred,
                                        "--limit", str(reference["test_samples"])],
                           capture_output=True, text=True, timeout=HANG, env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        with h5py.File(pred, "r") as f:
            self.assertEqual(f.attrs["rule"], b"mixture")
            self.assertAlmostEqual(f.attrs["accuracy"], reference["mixture"]["accuracy"], places=12)
            self.assertEqual(f["early_exit"][:].sum(), 0)

    def test_resume_after_sigkill_during_experts(self):
        # The whole job (mpirun and every rank) SIGKILLed right after run.json
        # records expert 0: the experts stage never finishes; --resume redoes
        # none of the finished experts and ends with the uninterrupted run's
        # report and weights.
        run = os.path.join(self.tmp, "killed")
        r = self.train(2, run, env=dict(ENV, SMOE_FAULT="killjob:recorded-expert/000"))
        self.assertEqual(r.returncode, -signal.SIGKILL, r.stderr)  # mpirun itself was killed
        wait_until_released(run)
        manifest = os.path.join(run, "run.json")
        finished_before = {k: v for k, v in read_json(manifest)["done"].items() if k.startswith("expert/")}
        self.assertIn("expert/000", finished_before)
        done = read_json(manifest)["done"]
        self.assertNotIn("experts", done)
        self.assertFalse(os.path.exists(os.path.join(run, "report.json")))

        r = self.train(2, run, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = read_json(manifest)["done"]
        for key, record in finished_before.items():
            self.assertEqual(after[key], record, key + " was redone")  # finished work is not redone
        reference = read_json(os.path.join(self.runs[2], "report.json"))
        resumed = read_json(os.path.join(run, "report.json"))
        self.assertEqual(resumed["moe"], reference["moe"])
        self.assertEqual(resumed["base"], reference["base"])
        self.assertEqual(resumed["anytime"], reference["anytime"])
        self.assertEqual([e["checkpoint_sha256"] for e in resumed["experts"]],
                         [e["checkpoint_sha256"] for e in reference["experts"]])

    def test_sigterm_in_the_base_stage_stops_resumably_and_resumes_exactly(self):
        # Rank 1 gets SIGTERM right after the base model's epoch-2 checkpoint
        # (what Slurm sends at a time limit): every rank stops at the next
        # step, the job exits 75, and --resume continues after epoch 2.
        run = os.path.join(self.tmp, "terminated")
        r = self.train(2, run, env=dict(ENV, SMOE_FAULT="term:base-epoch-2:1"))
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("reached the job in epoch 3: it resumes after epoch 2", r.stdout + r.stderr)
        self.assertEqual(read_json(os.path.join(run, "run.json"))["done"]["base/progress"]["epoch"], 2)
        r = self.train(2, run, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        done = read_json(os.path.join(run, "run.json"))["done"]
        self.assertEqual(done["base"]["resumed_after_epoch"], 2)
        self.assertEqual(done["base"]["sha256"], read_json(os.path.join(self.runs[2], "run.json"))["done"]["base"]["sha256"])
        self.assertFalse(os.path.exists(os.path.join(run, "base-progress")))

    def test_sigterm_in_the_experts_stage_stops_resumably_and_resumes_exactly(self):
        # The rank training expert 1 gets SIGTERM right after that expert's
        # epoch-2 checkpoint: the task stops at its next batch, no task is
        # handed out after it, every rank exits 75, and --resume continues
        # expert 1 after epoch 2 to the uninterrupted run's weights.
        run = os.path.join(self.tmp, "experts-terminated")
        r = self.train(2, run, env=dict(ENV, SMOE_FAULT="term:expert-1-epoch-2"))
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("expert 1: a stop signal (SIGTERM or SIGUSR1) arrived in epoch 3: it resumes after epoch 2",
                      r.stdout + r.stderr)
        self.assertNotIn("experts", read_json(os.path.join(run, "run.json"))["done"])
        self.assertTrue(os.path.exists(os.path.join(run, "experts", "expert-001.progress.json")))
        r = self.train(2, run, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        logs = "".join(read_text(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("log"))
        self.assertIn("expert 1 resuming after epoch 2 of 3", logs)
        reference = read_json(os.path.join(self.runs[2], "report.json"))
        self.assertEqual([e["checkpoint_sha256"] for e in read_json(os.path.join(run, "report.json"))["experts"]],
                         [e["checkpoint_sha256"] for e in reference["experts"]])

    def test_an_expert_task_killed_mid_training_resumes_after_its_last_epoch(self):
        # The rank training expert 1 dies right after that expert's epoch-2
        # checkpoint; the resumed job continues it after epoch 2 (on any rank)
        # and ends with the uninterrupted run's weights.
        run = os.path.join(self.tmp, "expert-killed")
        env = dict(ENV, SMOE_FAULT="kill:expert-1-epoch-2")
        r = self.train(2, run, env=env)
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(os.path.exists(os.path.join(run, "experts", "expert-001.progress.json")))
        r = subprocess.run(mpirun(2) + [SMOE, "train", "--config", QUICK, "--run-dir", run, "--resume"] + self.common[:-1],
                           capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        logs = "".join(read_text(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("log"))
        self.assertIn("expert 1 resuming after epoch 2 of 3", logs)  # on whichever rank took the task
        reference = read_json(os.path.join(self.runs[2], "report.json"))
        resumed = read_json(os.path.join(run, "report.json"))
        self.assertEqual([e["checkpoint_sha256"] for e in resumed["experts"]],
                         [e["checkpoint_sha256"] for e in reference["experts"]])
        self.assertEqual(resumed["moe"], reference["moe"])
        self.assertEqual(sorted(f for f in os.listdir(os.path.join(run, "experts")) if "progress" in f), [])

    def test_fused_experts_are_rank_count_invariant_and_resume_exactly(self):
        # experts.fuse=2 redone on finished runs: experts 0-1 and 2-3 are two
        # tasks, each trained as one grouped network. The checkpoints are the
        # same on 1 and 3 ranks; a rank killed right after group 1's epoch-2
        # checkpoint resumes it after epoch 2 and ends with the same weights.
        fuse = ("--resume", "--redo-from", "experts", "--set", "experts.fuse=2")
        reports = {}
        for np in (1, 3):
            run = os.path.join(self.tmp, "fused-np%d" % np)
            shutil.copytree(self.runs[np], run)
            r = self.train(np, run, *fuse)
            self.assertEqual(r.returncode, 0, r.stderr)
            reports[np] = read_json(os.path.join(run, "report.json"))
        hashes = [e["checkpoint_sha256"] for e in reports[1]["experts"]]
        self.assertEqual([e["checkpoint_sha256"] for e in reports[3]["experts"]], hashes)
        self.assertEqual(reports[3]["moe"], reports[1]["moe"])
        done = read_json(os.path.join(self.tmp, "fused-np1", "run.json"))["done"]
        self.assertEqual([done["expert/%03d" % k]["fused_with"] for k in range(4)], [[0, 1], [0, 1], [2, 3], [2, 3]])
        # Their own sample order: not the experts trained one by one.
        alone = read_json(os.path.join(self.runs[1], "report.json"))
        self.assertNotEqual(hashes[0], alone["experts"][0]["checkpoint_sha256"])
        self.assertGreater(reports[1]["moe"]["bagging"]["accuracy"], reports[1]["base"]["accuracy"] - 0.02)

        run = os.path.join(self.tmp, "fused-killed")
        shutil.copytree(self.runs[2], run)
        r = self.train(2, run, *fuse, env=dict(ENV, SMOE_FAULT="kill:group-1-epoch-2"))
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(os.path.exists(os.path.join(run, "experts", "group-001.progress.json")))
        r = self.train(2, run, "--resume", "--set", "experts.fuse=2")
        self.assertEqual(r.returncode, 0, r.stderr)
        logs = "".join(read_text(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("log"))
        self.assertIn("experts 2-3 resuming after epoch 2 of 3", logs)
        self.assertEqual([e["checkpoint_sha256"] for e in read_json(os.path.join(run, "report.json"))["experts"]],
                         hashes)
        self.assertEqual(sorted(f for f in os.listdir(os.path.join(run, "experts")) if "progress" in f), [])

    def test_a_memory_budget_smaller_than_the_data_changes_nothing(self):
        # 1 MiB per rank: both splits stream from the shards, the trunk
        # features spill to disk, g0 and each expert's logits on the training
        # set are read back from files; the report and every checkpoint
        # (ensemblers included) are those of the run that held everything in RAM.
        run = os.path.join(self.tmp, "budget")
        r = self.train(2, run, "--set", "runtime.memory_budget_mb=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        reference = read_json(os.path.join(self.runs[2], "report.json"))
        small = read_json(os.path.join(run, "report.json"))
        self.assertEqual(reference["trunk_cache"]["mode"], "memory")
        self.assertEqual(small["trunk_cache"]["mode"], "disk")
        for key in ("base", "moe", "anytime", "specialisation", "routing"):
            self.assertEqual(small[key], reference[key], key)
        for key in ("checkpoint_sha256", "stacking_sha256"):
            self.assertEqual([e[key] for e in small["experts"]], [e[key] for e in reference["experts"]], key)
        self.assertEqual({e["logits_mode"] for e in reference["experts"]}, {"memory"})
        self.assertEqual({e["logits_mode"] for e in small["experts"]}, {"disk"})
        g0_record = {name: read_json(os.path.join(r, "run.json"))["done"]["cluster"] for name, r in
                     (("small", run), ("reference", self.runs[2]))}
        self.assertEqual(g0_record["reference"]["g0_mode"], "memory")
        self.assertEqual(g0_record["small"]["g0_mode"], "disk")
        self.assertEqual(g0_record["small"]["g0_sha256"], g0_record["reference"]["g0_sha256"])
        for stage in ("base", "embed", "cluster", "gate", "experts", "eval"):
            self.assertEqual(len(small["peak_rss_mb"][stage]), 2, stage)  # one peak per rank
        self.assertEqual(os.listdir(os.path.join(run, "cache")), [])  # spilled files removed

    def test_a_failing_rank_ends_the_job_quickly(self):
        run = os.path.join(self.tmp, "fault")
        # The job ends through the failing rank's error (MPI_Abort), not by
        # the stall inspector (30 min by default) nor never: a hang reaches HANG.
        r = self.train(2, run, env=dict(ENV, SMOE_FAULT="expert:1"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("injected fault while training expert 1", r.stderr)
        self.assertNotIn("stall:", r.stderr)

    def test_a_fault_in_any_stage_fails_fast_and_a_kill_there_resumes_exactly(self):
        # Each stage is reached by resuming a finished run from it (--redo-from;
        # eval always runs), so only that stage's fault is exercised.
        reference = read_json(os.path.join(self.runs[2], "report.json"))
        for stage in ("base", "embed", "cluster", "gate", "experts", "eval"):
            redo = ["--resume"] + (["--redo-from", stage] if stage != "eval" else [])
            for rank in (0, 1):  # the coordinator, a worker
                run = os.path.join(self.tmp, "fault-%s-%d" % (stage, rank))
                shutil.copytree(self.runs[2], run)
                r = self.train(2, run, *redo, env=dict(ENV, SMOE_FAULT="stage:%s:%d" % (stage, rank)))
                self.assertNotEqual(r.returncode, 0, stage)
                self.assertNotIn("stall:", r.stderr, stage)  # ended by the error, not the stall inspector
                self.assertIn("smoe: error on rank %d: injected fault in stage %s on rank %d" % (rank, stage, rank),
                              r.stderr)
                shutil.rmtree(run)
            # A worker lost (SIGKILL) as the stage starts: the job ends, and a
            # plain --resume finishes it with the uninterrupted run's results.
            run = os.path.join(self.tmp, "kill-%s" % stage)
            shutil.copytree(self.runs[2], run)
            os.remove(os.path.join(run, "report.json"))
            r = self.train(2, run, *redo, env=dict(ENV, SMOE_FAULT="kill:%s:1" % stage))
            self.assertNotEqual(r.returncode, 0, stage)
            self.assertNotIn("stall:", r.stderr, stage)  # mpirun ended the job, not the stall inspector
            self.assertFalse(os.path.exists(os.path.join(run, "report.json")), stage)
            r = self.train(2, run, "--resume")
            self.assertEqual(r.returncode, 0, r.stderr)
            resumed = read_json(os.path.join(run, "report.json"))
            for key in ("base", "moe", "anytime", "specialisation"):
                self.assertEqual(resumed[key], reference[key], (stage, key))
            self.assertEqual([e["checkpoint_sha256"] for e in resumed["experts"]],
                             [e["checkpoint_sha256"] for e in reference["experts"]], stage)
            shutil.rmtree(run)

    def test_a_libtorch_error_in_a_stage_is_one_line_and_its_trace_goes_to_the_log(self):
        # A real libtorch error (SMOE_FAULT=torch: a view of the wrong size) in
        # the cluster stage on a worker: the user reads one line naming the
        # stage, the rank, libtorch's message and the stage's keys; libtorch's
        # whole message (with its backtrace, on libtorch 2.x) is in the log.
        run = os.path.join(self.tmp, "torch-error")
        shutil.copytree(self.runs[2], run)
        r = self.train(2, run, "--resume", "--redo-from", "cluster", env=dict(ENV, SMOE_FAULT="torch:cluster:1"))
        self.assertNotEqual(r.returncode, 0)
        errors = [line for line in r.stderr.splitlines() if line.startswith("smoe: error")]
        self.assertEqual(errors, ["smoe: error on rank 1: stage cluster failed on rank 1: shape '[4]' is invalid for "
                                  "input of size 6 (the stage reads cluster.*, experts.count, gate.temperature, "
                                  "gate.hard; the whole message is in the rank's log)"], r.stderr)
        self.assertNotIn("Exception raised from", r.stderr)
        events = [json.loads(line) for line in read_text(os.path.join(run, "log.rank-1.jsonl")).splitlines()]
        failures = [e for e in events if e.get("event") == "stage_failure"]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["stage"], "cluster")
        self.assertIn("shape '[4]' is invalid for input of size 6", failures[0]["message"])

    def test_a_stalled_rank_ends_the_job_naming_it(self):
        # A rank stuck in its own work (not waiting on anyone) for longer than
        # runtime.stall_timeout_s: the stall inspector aborts the whole job
        # with one line naming the rank and its stage — the worker, and the
        # coordinator itself. The inspector is a clock by design; 10 s is far
        # beyond any step of the quick config (milliseconds), so only the
        # injected hang reaches it, and the test waits for the verdict
        # however long it takes to come.
        for stage, rank in (("gate", 1), ("experts", 0)):
            run = os.path.join(self.tmp, "stall-%s" % stage)
            shutil.copytree(self.runs[2], run)
            r = self.train(2, run, "--resume", "--redo-from", stage, "--set", "runtime.stall_timeout_s=10",
                           env=dict(ENV, SMOE_FAULT="hang:%s:%d" % (stage, rank)))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("smoe: error on rank 0: stall: rank %d made no progress for" % rank, r.stderr)
            self.assertIn("in stage %s (last: stage %s started)" % (stage, stage), r.stderr)
            shutil.rmtree(run)

    def test_eval_reevaluates_with_new_taus_and_refuses_other_changes(self):
        run = os.path.join(self.tmp, "eval-copy")
        shutil.copytree(self.runs[1], run)
        r = subprocess.run([SMOE, "eval", "--run-dir", run, "--set", "eval.taus=[0, 0.5, 1]", "-q"],
                           capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = read_json(os.path.join(run, "report.json"))
        self.assertEqual([p["tau"] for p in rep["anytime"]], [0, 0.5, 1])
        self.assertEqual(rep["moe"], read_json(os.path.join(self.runs[1], "report.json"))["moe"])
        r = subprocess.run([SMOE, "eval", "--run-dir", run, "--set", "experts.count=3"], capture_output=True,
                           text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(),
                         "smoe: error: smoe eval: only eval.* and runtime.* keys may change (experts.count: 4 -> 3)")

    def test_bad_inputs(self):
        existing = self.runs[1]
        before = read_json(os.path.join(existing, "run.json"))
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", existing] + self.common,
                           capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(), "smoe: error: run folder %s already exists "
                         "(use --resume to continue it or --force to start over)" % existing)
        self.assertEqual(read_json(os.path.join(existing, "run.json")), before)
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", os.path.join(self.tmp, "x"),
                            "--set", "experts.cuont=3"], capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(), "smoe: error: config key 'experts.cuont' (--set): unknown key")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x")))
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", os.path.join(self.tmp, "y"),
                            "--set", "data.path=" + os.path.join(self.tmp, "no-data")],
                           capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "smoe: error: dataset folder %s does not exist\n" % os.path.join(self.tmp, "no-data"))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "y")))  # nothing created
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", os.path.join(self.tmp, "many")]
                           + self.common + ["--set", "experts.count=3001"], capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(), "smoe: error: config key 'experts.count' is 3001 but the training split "
                         "'train' has 3000 samples: every expert needs at least one")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "many")))
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", os.path.join(self.tmp, "perclass-em")]
                           + self.common + ["--set", "cluster.method=per_class", "--set", "scheme=em",
                                            "--set", "em.steps=1"], capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1)
        self.assertIn("'per_class' routes with the fixed gate 'class_routing', which EM cannot refit", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "perclass-em")))
        r = subprocess.run(mpirun(2) + [SMOE, "train", "--config", QUICK, "--run-dir", os.path.join(self.tmp, "z"),
                                        "--resume"] + self.common, capture_output=True, text=True, env=ENV)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("smoe: error: --resume: %s holds no smoe run (no run.json)" % os.path.join(self.tmp, "z"),
                      r.stderr)

    def test_dfcp_scheme_is_rank_count_invariant(self):
        # DFCP-MoE on finished 1- and 3-rank runs: pseudo-labels from the
        # trusted subset (5 %, the default), then the double-stage clustering.
        reports, pseudo = {}, {}
        for np in (1, 3):
            run = os.path.join(self.tmp, "dfcp-np%d" % np)
            shutil.copytree(self.runs[np], run)
            r = self.train(np, run, "--resume", "--redo-from", "pseudo_label", "--set", "scheme=dfcp",
                           "--set", "cluster.method=dfcp",
                           "--set", "cluster.dfcp.k_max=6")
            self.assertEqual(r.returncode, 0, r.stderr)
            reports[np] = read_json(os.path.join(run, "report.json"))
            pseudo[np] = read_json(os.path.join(run, "run.json"))["done"]["pseudo_label"]
            self.assertGreater(pseudo[np]["pseudo_label_accuracy"], 0.6)
            self.assertEqual(pseudo[np]["given_label_accuracy"], 1.0)  # no label noise here
            cluster = read_json(os.path.join(run, "run.json"))["done"]["cluster"]
            self.assertEqual([s["k"] for s in cluster["stage1"]], [4, 5, 6])
            self.assertEqual(len(cluster["references"]), 4)
            self.assertGreaterEqual(cluster["coverage"], 0.9)
        self.assertEqual(pseudo[3]["sha256"], pseudo[1]["sha256"])
        self.assertEqual(reports[3]["cluster_quality"], reports[1]["cluster_quality"])
        self.assertEqual(reports[3]["moe"], reports[1]["moe"])
        self.assertEqual([e["checkpoint_sha256"] for e in reports[3]["experts"]],
                         [e["checkpoint_sha256"] for e in reports[1]["experts"]])
        self.assertNotEqual(reports[1]["cluster_quality"], read_json(os.path.join(self.runs[1], "report.json"))["cluster_quality"])

    def test_clusters_from_a_features_file_in_hdf5_or_torch_format(self):
        # Features made elsewhere (cluster.features): here each sample's class
        # one-hot plus a little noise, so that K-means on them never splits a
        # class, which the base model's embeddings do.
        manifest = read_json(os.path.join(self.data, "manifest.json"))
        train = manifest["splits"]["train"]
        labels = np.concatenate([h5py.File(os.path.join(self.data, s["file"]), "r")["labels"][:] for s in train["shards"]])
        rng = np.random.default_rng(0)
        feats = (3 * np.eye(10)[labels] + 0.05 * rng.standard_normal((len(labels), 10))).astype(np.float32)
        h5 = os.path.join(self.tmp, "features.h5")
        with h5py.File(h5, "w") as f:
            f["features"] = feats
        pt = os.path.join(self.tmp, "features.pt")
        torch.save(torch.from_numpy(feats), pt)
        one_entry = os.path.join(self.tmp, "one-entry.pt")
        torch.save({"features": torch.from_numpy(feats)}, one_entry)
        short = os.path.join(self.tmp, "short.h5")
        with h5py.File(short, "w") as f:
            f["features"] = feats[:100]
        # A file with too few rows is refused before anything is written.
        bad_run = os.path.join(self.tmp, "features-bad")
        r = self.train(1, bad_run, "--set", "cluster.features=" + short)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("features file %s (config key 'cluster.features') has 100 rows but the training split has 3000 "
                      "samples" % short, r.stderr)
        self.assertFalse(os.path.exists(bad_run))
        # So is one whose rows hold NaN (issue #31: it used to be refused only
        # when the cluster stage started, after the base model had trained).
        nan = feats.copy()
        nan[2500, 3] = np.nan
        nan_h5, nan_pt = os.path.join(self.tmp, "nan.h5"), os.path.join(self.tmp, "nan.pt")
        with h5py.File(nan_h5, "w") as f:
            f["features"] = nan
        torch.save(torch.from_numpy(nan), nan_pt)
        for path in (nan_h5, nan_pt):
            r = self.train(1, bad_run, "--set", "cluster.features=" + path)
            self.assertNotEqual(r.returncode, 0)
            errors = [line for line in r.stderr.splitlines() if line.startswith("smoe: error")]
            self.assertEqual(errors, ["smoe: error: features file %s (config key 'cluster.features'): row 2500 holds "
                                      "NaN or inf" % path], r.stderr)
            self.assertFalse(os.path.exists(bad_run))
        # libtorch 1.13's unpickler cannot read a Python dict of one entry
        # (SETITEM): smoe says so before anything is written. Later libtorch
        # reads it, and the check does not apply.
        if re.search(r", libtorch 1\.", subprocess.run([SMOE, "--version"], capture_output=True, text=True).stdout):
            r = self.train(1, bad_run, "--set", "cluster.features=" + one_entry)
            self.assertIn("features file %s: libtorch cannot read a dict of one entry; save the tensor itself"
                          % one_entry, r.stderr)
            self.assertFalse(os.path.exists(bad_run))
        # HDF5 on 2 ranks and torch on 1 give the same g0 (the base model and
        # embeddings are reused: --redo-from cluster).
        records = {}
        for ranks, path in ((2, h5), (1, pt)):
            run = os.path.join(self.tmp, "features-np%d" % ranks)
            shutil.copytree(self.runs[ranks], run)
            r = self.train(ranks, run, "--resume", "--redo-from", "cluster", "--set", "cluster.features=" + path)
            self.assertEqual(r.returncode, 0, r.stderr)
            records[ranks] = read_json(os.path.join(run, "run.json"))["done"]["cluster"]
            self.assertEqual(records[ranks]["features"]["file"], path)
            self.assertEqual(records[ranks]["features"]["dim"], 10)
            contingency = records[ranks]["quality"]["contingency"]
            for c in range(10):  # every class in one cluster
                self.assertEqual(sum(1 for row in contingency if row[c] > 0), 1, "class %d split" % c)
            saved = torch.load(os.path.join(run, "cluster.pt"))
            self.assertEqual(tuple(saved["feature_centroids"].shape), (4, 10))
            self.assertEqual(saved["centroids"].shape[0], 4)  # the gate starts in the embeddings' space
            self.assertNotEqual(saved["centroids"].shape[1], 10)
            self.assertTrue(os.path.exists(os.path.join(run, "report.json")))
        self.assertEqual(records[1]["sha256"], records[2]["sha256"])
        self.assertEqual(records[1]["g0_sha256"], records[2]["g0_sha256"])
        base_record = read_json(os.path.join(self.runs[1], "run.json"))["done"]["cluster"]
        self.assertGreater(records[1]["quality"]["nmi"], base_record["quality"]["nmi"])

    def test_baselines_per_class_with_oracle_and_single_expert(self):
        run = os.path.join(self.tmp, "perclass")
        r = self.train(2, run, "--set", "cluster.method=per_class", "--set", "eval.class_oracle=true",
                       "--set", "experts.epochs=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = read_json(os.path.join(run, "report.json"))
        self.assertIn("class_oracle", rep)
        # Every class goes to exactly one expert, and every expert gets at least one class.
        class_to_expert = read_json(os.path.join(run, "run.json"))["done"]["cluster"]["class_to_expert"]
        self.assertEqual(len(class_to_expert), 10)
        self.assertEqual(sorted(set(class_to_expert)), [0, 1, 2, 3])
        g0 = read_rows(os.path.join(run, "g0.f32"), 3000, 4)
        labels = torch.tensor([class_to_expert[c] for c in range(10)])
        self.assertTrue(torch.equal(g0.sum(1), torch.ones(3000)))                  # one-hot rows
        self.assertEqual(len({(int(e)) for e in g0.argmax(1)}), 4)
        # The per-class gate is the fixed class routing, saved as such.
        gate = torch.load(os.path.join(run, "gate.pt"))
        self.assertTrue(torch.equal(gate["class_to_expert"], labels))
        # With the oracle each test sample runs its own class's expert: no worse than routing by phi's guess.
        self.assertGreaterEqual(rep["class_oracle"]["no_ensembling"]["accuracy"],
                                rep["moe"]["no_ensembling"]["accuracy"])
        run1 = os.path.join(self.tmp, "k1")
        r = self.train(2, run1, "--set", "experts.count=1", "--set", "experts.gamma=1", "--set", "experts.epochs=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = read_json(os.path.join(run1, "report.json"))
        self.assertEqual(rep["num_experts"], 1)
        self.assertAlmostEqual(rep["experts"][0]["train_samples_effective"], 3000, delta=1e-3)

    def test_em_mode_invariant_resumable_and_extends_algorithm_1(self):
        em = ("--set", "scheme=em", "--set", "em.steps=2")
        runs = {}
        for np in (1, 2):
            runs[np] = os.path.join(self.tmp, "em-np%d" % np)
            r = self.train(np, runs[np], *em)
            self.assertEqual(r.returncode, 0, r.stderr)
        reports = {np: read_json(os.path.join(run, "report.json")) for np, run in runs.items()}
        self.assertEqual(reports[1]["moe"], reports[2]["moe"])
        self.assertEqual(reports[1]["anytime"], reports[2]["anytime"])
        self.assertEqual([e["moe"] for e in reports[1]["em"]], [e["moe"] for e in reports[2]["em"]])
        self.assertEqual(len(reports[2]["em"]), 2)
        for entry in reports[2]["em"]:
            for key in ("expert_eval_seconds", "allreduce_seconds", "allreduce_bytes", "changed_top_expert", "seconds"):
                self.assertIn(key, entry["estep"])
            # q is written by rows, not reduced: only [K + 2] int64 counts cross, whatever N.
            self.assertEqual(entry["estep"]["allreduce_bytes"], (4 + 2) * 8)
            self.assertEqual(entry["estep"]["q_file_bytes"], 3000 * 4 * 4)
            self.assertAlmostEqual(sum(entry["estep"]["q_mass"]), 1.0, places=5)
            self.assertIn("anytime_summary", entry)
            self.assertGreater(entry["moe"]["bagging"]["accuracy"], 0.5)
        # The same q, bit for bit, on 1 and 2 ranks.
        for r in (1, 2):
            self.assertEqual(read_json(os.path.join(runs[1], "run.json"))["done"]["em/%d/estep" % r]["q_sha256"],
                             read_json(os.path.join(runs[2], "run.json"))["done"]["em/%d/estep" % r]["q_sha256"])
        # Algorithm 1 is the case N_E = 0: the EM run's first experts are the Algorithm 1 experts.
        alg1 = read_json(os.path.join(self.runs[2], "report.json"))
        self.assertEqual([e["checkpoint_sha256"] for e in reports[2]["experts"]],
                         [e["checkpoint_sha256"] for e in alg1["experts"]])
        self.assertEqual(alg1["em_steps"], 0)
        self.assertNotIn("em", alg1)
        # The rounds' experts differ from Algorithm 1's, and q is a posterior over experts.
        q = read_rows(os.path.join(runs[2], "em-2", "q.f32"), 3000, 4)
        self.assertTrue(torch.allclose(q.sum(1), torch.ones(3000), atol=1e-5))
        for k in range(4):
            a1 = torch.load(os.path.join(runs[2], "experts", "expert-%03d.pt" % k))
            em2 = torch.load(os.path.join(runs[2], "em-2", "expert-%03d.pt" % k))
            self.assertFalse(all(torch.equal(a1[n], em2[n]) for n in a1), "expert %d unchanged by EM" % k)

        # The whole job killed inside EM round 2 (once its expert 0 is
        # recorded) resumes to the same result.
        run = os.path.join(self.tmp, "em-killed")
        r = self.train(2, run, *em, env=dict(ENV, SMOE_FAULT="killjob:recorded-em/2/expert/000"))
        self.assertEqual(r.returncode, -signal.SIGKILL, r.stderr)
        wait_until_released(run)
        manifest = os.path.join(run, "run.json")
        self.assertIn("em/2/expert/000", read_json(manifest)["done"])
        self.assertNotIn("em/2", read_json(manifest)["done"])
        # A fault as the em stage starts, on a worker, ends the job through its error.
        r = self.train(2, run, "--resume", *em, env=dict(ENV, SMOE_FAULT="stage:em:1"))
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("stall:", r.stderr)
        self.assertIn("injected fault in stage em on rank 1", r.stderr)
        r = self.train(2, run, "--resume", *em)
        self.assertEqual(r.returncode, 0, r.stderr)
        resumed = read_json(os.path.join(run, "report.json"))
        self.assertEqual(resumed["moe"], reports[2]["moe"])
        self.assertEqual([e["moe"] for e in resumed["em"]], [e["moe"] for e in reports[2]["em"]])

    # The machine's GPUs as the driver sees them (Debian's Python torch is
    # CPU-only, so torch.cuda would skip this test even on a GPU machine).
    @unittest.skipUnless(visible_gpus() > 0, "no CUDA device here: the GPU path runs on GPU machines only")
    def test_gpu_run_with_nccl_estep(self):
        gpus = visible_gpus()
        if gpus == 1:  # two ranks share the one GPU, deliberately: collectives through MPI
            run = os.path.join(self.tmp, "gpu-shared")
            r = self.train(2, run, "--set", "runtime.device=cuda")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(read_json(os.path.join(run, "report.json"))["runtime"]["devices"], ["cuda:0", "cuda:0"])
            self.assertIn("ranks share a cuda device", read_text(os.path.join(run, "log.jsonl")))
        ranks = min(2, gpus)
        run = os.path.join(self.tmp, "gpu")
        r = self.train(ranks, run, "--set", "runtime.device=cuda", "--set", "scheme=em", "--set", "em.steps=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = read_json(os.path.join(run, "report.json"))
        self.assertEqual(rep["runtime"]["devices"], ["cuda:%d" % (i % gpus) for i in range(ranks)])
        self.assertTrue(rep["em"][0]["estep"]["device"].startswith("cuda"))

    # The GPU path on a machine without GPU: two ranks on the fake
    # accelerator's one device (shared, so their collectives go through MPI),
    # whose operators fail on any tensor left on the CPU. Its kernels are the
    # CPU's: the same results as the CPU run on two ranks, bit for bit.
    @unittest.skipUnless(os.path.exists(FAKE_ACCELERATOR), "the fake accelerator is not built")
    def test_fake_accelerator_gives_the_cpu_results(self):
        run = os.path.join(self.tmp, "fake")
        cmd = (mpirun(2) + ["-x", "LD_PRELOAD=" + FAKE_ACCELERATOR, SMOE, "train", "--config", QUICK, "--run-dir", run]
               + self.common + ["--set", "runtime.device=privateuseone"])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG, env=ENV)
        self.assertEqual(r.returncode, 0, r.stderr)
        fake, cpu = (read_json(os.path.join(d, "report.json")) for d in (run, self.runs[2]))
        self.assertEqual(fake["runtime"]["devices"], ["privateuseone:0", "privateuseone:0"])
        self.assertIn("ranks share a privateuseone device", read_text(os.path.join(run, "log.jsonl")))
        for key in ("base", "moe", "anytime", "cluster_quality", "routing", "specialisation"):
            self.assertEqual(fake[key], cpu[key], key)
        self.assertEqual(stage_hashes(run), stage_hashes(self.runs[2]))

    def test_a_device_that_is_not_here_stops_every_rank_before_the_run_folder(self):
        cases = [("privateuseone", "runtime.device is privateuseone but no privateuseone device is available on rank 0")]
        if visible_gpus() == 0:
            cases.append(("cuda", "runtime.device is cuda but no cuda device is available on rank 0"))
        for device, message in cases:
            run = os.path.join(self.tmp, "no-" + device)
            r = self.train(2, run, "--set", "runtime.device=" + device)
            self.assertNotEqual(r.returncode, 0)
            errors = [line for line in r.stderr.splitlines() if line.startswith("smoe: error")]
            self.assertEqual(len(errors), 1, r.stderr)
            self.assertIn(message, errors[0])
            self.assertFalse(os.path.exists(run), device)

    def test_base_checkpoint_and_sampled_batches(self):
        # A base model given by checkpoint is loaded, not trained: same base accuracy as its run.
        source = read_json(os.path.join(self.runs[1], "report.json"))
        run = os.path.join(self.tmp, "from-ckpt")
        r = self.train(1, run, "--set", "base.checkpoint=" + os.path.join(self.runs[1], "base.pt"),
                       "--set", "experts.weighting=sample", "--set", "experts.epochs=2")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = read_json(os.path.join(run, "report.json"))
        self.assertEqual(rep["base"], source["base"])
        self.assertEqual(read_json(os.path.join(run, "run.json"))["done"]["base"]["source"],
                         os.path.join(self.runs[1], "base.pt"))
        # Sampling mode: each expert sees about sum_x w_k(x) samples per epoch, not all 3,000.
        for e in rep["experts"]:
            record = read_json(os.path.join(run, "run.json"))["done"]["expert/%03d" % e["id"]]
            self.assertAlmostEqual(record["samples_seen"], 2 * round(e["train_samples_effective"]), delta=2)
            self.assertLess(record["samples_seen"], 2 * 3000)
        # A damaged checkpoint: one line naming it, nothing trained.
        bad = os.path.join(self.tmp, "bad.pt")
        with open(bad, "wb") as f:
            f.write(b"not a checkpoint")
        r = self.train(1, os.path.join(self.tmp, "bad-ckpt"), "--set", "base.checkpoint=" + bad)
        self.assertNotEqual(r.returncode, 0)
        errors = [line for line in r.stderr.splitlines() if line.startswith("smoe: error")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertTrue(errors[0].startswith("smoe: error: %s: not a readable checkpoint" % bad), errors[0])
        # Found before anything was created: the same command may simply be run again once fixed.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "bad-ckpt")))

    def test_a_shard_changed_after_its_manifest_is_caught_before_training(self):
        data = os.path.join(self.tmp, "edited-data")
        shutil.copytree(self.data, data)
        shard = os.path.join(data, "train-00000.h5")
        with open(shard, "r+b") as f:  # same size, other bytes
            f.seek(os.path.getsize(shard) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5A]))
        run = os.path.join(self.tmp, "edited")
        r = self.train(2, run, "--set", "data.path=" + data)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"(?m)^smoe: error: %s: shard changed after its manifest was written "
                         r"\(sha256 [0-9a-f]{12}, the manifest says [0-9a-f]{12}\); re-run smoe-data convert$"
                         % shard)
        self.assertFalse(os.path.exists(run))  # found before anything was created
        # A resumed run re-checks: a shard edited between two jobs stops the second one.
        run = os.path.join(self.tmp, "edited-later")
        shutil.copytree(self.runs[1], run)
        with open(os.path.join(run, "run.json")) as f:
            before = f.read()
        r = subprocess.run([SMOE, "train", "--config", QUICK, "--run-dir", run, "--resume", "--redo-from", "eval"]
                           + self.common + ["--set", "data.path=" + data], capture_output=True, text=True, env=ENV)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("shard changed after its manifest was written", r.stderr)
        with open(os.path.join(run, "run.json")) as f:
            self.assertEqual(f.read(), before)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("mount"), "needs root to mount a small tmpfs")
    def test_a_full_or_read_only_disk_fails_in_one_line_and_keeps_the_files(self):
        mnt = os.path.join(self.tmp, "small-disk")
        os.makedirs(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt], capture_output=True).returncode:
            self.skipTest("mount is not permitted here")
        try:
            run = os.path.join(mnt, "run")
            shutil.copytree(self.runs[1], run)

            def snapshot():
                out = {}
                for d, _, files in os.walk(run):
                    for name in files:
                        with open(os.path.join(d, name), "rb") as f:
                            out[os.path.relpath(os.path.join(d, name), run)] = f.read()
                return out

            before = snapshot()
            # Full: room for run.json and the log, not for an expert's checkpoint.
            st = os.statvfs(mnt)
            with open(os.path.join(mnt, "filler"), "wb") as f:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 150 * 1024))
            resume = [SMOE, "train", "--config", QUICK, "--run-dir", run, "--resume"] + self.common
            r = subprocess.run(resume + ["--redo-from", "experts"], capture_output=True, text=True, env=ENV,
                               timeout=HANG)
            self.assertEqual(r.returncode, 1, r.stderr)
            # (the first write of expert 0: its first epoch's checkpoint)
            self.assertRegex(r.stderr, r"^smoe: error: cannot write %s/experts/expert-000\.progress\.optim: No space left on "
                             r"device \(any previous version is kept\)\n$" % run)
            after = snapshot()
            self.assertEqual(sorted(after), sorted(before))  # no temporary file left behind
            for name in before:
                if name not in ("run.json", "log.jsonl"):  # --redo-from rewrites run.json on purpose
                    self.assertEqual(after[name], before[name], name)
            # Read-only: one line naming the file, for train and for eval.
            os.remove(os.path.join(mnt, "filler"))
            subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
            before = snapshot()
            for cmd in (resume, [SMOE, "eval", "--run-dir", run, "-q"]):
                r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=HANG)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertRegex(r.stderr, r"^smoe: error: cannot write %s/[a-z_.]+: Read-only file system\n$" % run)
            self.assertEqual(snapshot(), before)
        finally:
            subprocess.run(["umount", mnt])

    def test_cli_conventions_and_provenance(self):
        # --version names the build and its libraries; bare smoe is a usage error on stderr.
        r = subprocess.run([SMOE, "--version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^smoe \d+\.\d+\.\d+ \(commit ([0-9a-f]{7,}(-dirty)?|unknown)\), libtorch [\d.]+, "
                                   r".*MPI.*, HDF5 [\d.]+, (CPU only|CUDA \d+\.\d+.*)\n$")
        # The CUDA matrix entry (launch/test-matrix.sh trixie-cuda) is a CUDA build with the NCCL plugin:
        # --version names CUDA, cuDNN and NCCL, and the driver (none on a machine without a GPU).
        version = r.stdout
        if os.environ.get("SMOE_MATRIX_ENTRY") == "trixie-cuda":
            self.assertRegex(r.stdout, r", CUDA \d+\.\d+, cuDNN \d+\.\d+\.\d+, NCCL \d+\.\d+\.\d+ "
                                       r"\(CUDA runtime \d+\.\d+, driver (none|\d+\.\d+)\), GPUs: ")
        r = subprocess.run([SMOE], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertIn("usage:", r.stderr)
        # train without --config: every default, then --set (here: a dataset that is not there).
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([SMOE, "train", "--run-dir", os.path.join(tmp, "run"), "--set",
                                "data.path=" + os.path.join(tmp, "none")], capture_output=True, text=True, env=ENV)
            self.assertEqual(r.returncode, 1)
            self.assertNotIn("--config", r.stderr)
            self.assertIn(os.path.join(tmp, "none"), r.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "run")))
        # Every report says where and with what it ran; console lines carry the date.
        rep = read_json(os.path.join(self.runs[2], "report.json"))["provenance"]
        for key in ("smoe_version", "git_commit", "libtorch", "mpi", "hdf5"):
            self.assertTrue(rep[key], key)
        # CUDA's versions: null for a CPU-only libtorch, the CUDA build's otherwise (as --version says).
        if version.endswith(", CPU only\n"):
            self.assertIsNone(rep["cuda"])
        else:
            self.assertRegex(rep["cuda"]["libtorch_cuda"], r"^\d+\.\d+$")
        self.assertEqual([x["rank"] for x in rep["ranks"]], [0, 1])
        for x in rep["ranks"]:
            self.assertEqual(x["threads"], 1)
            self.assertTrue(x["host"] and x["affinity"] and x["pid"] > 0)
        r = subprocess.run(mpirun(1) + [SMOE, "eval", "--run-dir", self.runs[1]] + self.common[2:-1],
                           capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout + r.stderr, r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} info eval")

    def test_smoe_run_binds_each_rank_to_its_own_cores(self):
        # launch/smoe-run under mpirun: with threads left to smoe
        # (runtime.threads 0), each rank runs as many threads as the cores
        # it is bound to, as report.json's provenance records them.
        cores = len(os.sched_getaffinity(0))
        run = os.path.join(self.tmp, "bound")
        shutil.copytree(self.runs[2], run)
        env = dict(ENV, SMOE=SMOE)
        for ranks in (1, 2) if cores >= 2 else (1,):
            r = subprocess.run([os.path.join(SRC, "launch", "smoe-run"), "-n", str(ranks), "eval", "--run-dir", run,
                                "--set", "runtime.threads=0", "-q"], capture_output=True, text=True, env=env, timeout=HANG)
            self.assertEqual(r.returncode, 0, r.stderr)
            got = read_json(os.path.join(run, "report.json"))["provenance"]["ranks"]
            per = cores // ranks
            self.assertEqual([(x["cores"], x["threads"]) for x in got], [(per, per)] * ranks, got)
            self.assertEqual(len({x["affinity"] for x in got}), ranks, got)  # disjoint cores

    def test_a_second_job_on_the_same_run_folder_stops_naming_the_first(self):
        run = os.path.join(self.tmp, "locked")
        shutil.copytree(self.runs[1], run)
        lock_holder = subprocess.Popen(["/usr/bin/python3", "-c", "import fcntl, sys\n"
                                        "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                                        "f.seek(0); f.truncate(); f.write('{\"host\": \"elsewhere\", \"pid\": 4242, "
                                        "\"slurm_job\": \"77\", \"since\": \"then\"}'); f.flush()\n"
                                        "print('locked', flush=True); sys.stdin.read()", run + ".lock"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(lock_holder.stdout.readline().strip(), "locked")
            r = subprocess.run([SMOE, "eval", "--run-dir", run, "-q"], capture_output=True, text=True, env=ENV,
                               timeout=HANG)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr, "smoe: error: run folder %s is in use by host elsewhere pid 4242 (Slurm job 77) "
                             "since then (lock %s.lock): wait for that job to end or stop it\n" % (run, run))
        finally:
            lock_holder.stdin.close()  # the holder ends (and its lock with it)
            lock_holder.wait()
            lock_holder.stdout.close()
        # The holder is gone: its lock went with it.
        r = subprocess.run([SMOE, "eval", "--run-dir", run, "-q"], capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_table_of_runs(self):
        # smoe table: the four rank counts' runs share one config, so they are
        # one cell of n = 4 whose spread is 0 (rank-count invariance);
        # Markdown on stdout, CSV to a file.
        csv = os.path.join(self.tmp, "table.csv")
        runs = [self.runs[n] for n in (1, 2, 3, 5)]
        r = subprocess.run([SMOE, "table", "--csv", csv, "--metric", "moe.bagging.accuracy", "--metric", "base.accuracy"]
                           + runs, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "| n | moe.bagging.accuracy | base.accuracy |")
        self.assertEqual(len(lines), 3)
        accuracy = read_json(os.path.join(self.runs[1], "report.json"))["moe"]["bagging"]["accuracy"]
        self.assertTrue(lines[2].startswith("| 4 | %.4f ± 0.0000 |" % accuracy), lines[2])
        self.assertEqual(read_text(csv).splitlines()[0],
                         "n,moe.bagging.accuracy mean,moe.bagging.accuracy std,base.accuracy mean,base.accuracy std")
        r = subprocess.run([SMOE, "table", os.path.join(self.tmp, "no-such-runs")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "smoe: error: %s does not exist\n" % os.path.join(self.tmp, "no-such-runs"))

    def write_sweep(self, name, sets, seeds):
        """A sweep file over experts.gamma in {0.1, 0.3} on the quick config
        and this test's data: self.tmp/NAME.yaml, its runs under self.tmp/NAME."""
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write("config: %s\nset: [%s]\ngrid:\n  experts.gamma: [0.1, 0.3]\nseeds: [%s]\n"
                    % (QUICK, ", ".join(["data.path=" + self.data] + sets), ", ".join(map(str, seeds))))
        return path, os.path.join(self.tmp, name)

    SMALL = ["data.limit_train=600", "data.limit_test=200", "ensembler.epochs=1", "runtime.threads=1"]

    def test_sweep_shares_earlier_stages_resumes_and_tabulates(self):
        # A grid of experts.gamma x two seeds: the gamma-0.3 runs start from
        # the gamma-0.1 runs' finished stages (same base model, new experts);
        # a second invocation skips what is finished and redoes what is not.
        sweep, out = self.write_sweep("sweep", self.SMALL + ["base.epochs=1", "experts.epochs=1"], [0, 1])
        r = subprocess.run(mpirun(2) + [SMOE, "sweep", sweep, "--out", out], capture_output=True, text=True, env=ENV,
                           timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("sweep: experts.gamma-0.3_seed-0 starts from experts.gamma-0.1_seed-0's finished stages, "
                      "redoing from experts", r.stdout)
        done = {name: read_json(os.path.join(out, name, "run.json"))["done"]
                for name in ("experts.gamma-0.1_seed-0", "experts.gamma-0.3_seed-0", "experts.gamma-0.1_seed-1")}
        self.assertEqual(done["experts.gamma-0.3_seed-0"]["base"], done["experts.gamma-0.1_seed-0"]["base"])
        self.assertEqual(done["experts.gamma-0.3_seed-0"]["cluster"], done["experts.gamma-0.1_seed-0"]["cluster"])
        self.assertNotEqual(done["experts.gamma-0.3_seed-0"]["expert/000"]["checkpoint_sha256"],
                            done["experts.gamma-0.1_seed-0"]["expert/000"]["checkpoint_sha256"])
        self.assertNotEqual(done["experts.gamma-0.1_seed-1"]["base"]["sha256"],
                            done["experts.gamma-0.1_seed-0"]["base"]["sha256"])  # another seed: its own base model
        self.assertIn("| experts.gamma | n |", r.stdout)
        self.assertEqual(len(read_text(os.path.join(out, "table.csv")).splitlines()), 3)
        os.remove(os.path.join(out, "experts.gamma-0.3_seed-1", "report.json"))
        r = subprocess.run(mpirun(2) + [SMOE, "sweep", sweep, "--out", out], capture_output=True, text=True, env=ENV,
                           timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count("already finished"), 3)
        self.assertIn("sweep: experts.gamma-0.3_seed-1 (4 of 4)", r.stdout)
        self.assertTrue(os.path.exists(os.path.join(out, "experts.gamma-0.3_seed-1", "report.json")))

    def test_sweep_in_groups_matches_runs_made_one_by_one(self):
        # 2 configs x 2 seeds under mpirun -np 3, each run on a group of one
        # rank (three groups, the runs handed out as the groups free up, a
        # run that starts from another's folder only once that one is done),
        # the whole job killed as the first run finishes (SMOE_FAULT at
        # eval-done, after its report.json) and resumed: every run folder
        # holds what the same run made alone by `smoe train` holds, and the
        # sweep's table is the table of those four runs.
        sets = self.SMALL + ["base.epochs=1", "experts.epochs=2"]
        sweep, out = self.write_sweep("sweep-groups", sets, [0, 1])
        sets = ["data.path=" + self.data] + sets
        names = ["experts.gamma-%s_seed-%d" % (g, n) for g in ("0.1", "0.3") for n in (0, 1)]
        cmd = mpirun(3) + [SMOE, "sweep", sweep, "--out", out, "--ranks-per-run", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, SMOE_FAULT="killjob:eval-done"),
                           timeout=HANG)
        self.assertEqual(r.returncode, -signal.SIGKILL, r.stderr)
        wait_until_released(*[os.path.join(out, n) for n in names if os.path.isdir(os.path.join(out, n))])
        finished = [n for n in names if os.path.exists(os.path.join(out, n, "report.json"))]
        self.assertTrue(finished, "no run finished before the kill")
        # A gamma-0.3 run starts from its seed's gamma-0.1 run: not finished.
        self.assertTrue(all(n.startswith("experts.gamma-0.1") for n in finished), finished)
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("by 3 groups of 1 rank", r.stdout)
        one_by_one = os.path.join(self.tmp, "one-by-one")
        for n, (g, seed) in zip(names, [(g, s) for g in ("0.1", "0.3") for s in (0, 1)]):
            run = os.path.join(one_by_one, n)
            args = [SMOE, "train", "--config", QUICK, "--run-dir", run, "-q"]
            for kv in sets + ["experts.gamma=" + g, "seed=%d" % seed]:
                args += ["--set", kv]
            t = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=HANG)
            self.assertEqual(t.returncode, 0, t.stderr)
            mine, alone = read_json(os.path.join(out, n, "report.json")), read_json(os.path.join(run, "report.json"))
            for key in ("base", "moe", "anytime", "cluster_quality"):
                self.assertEqual(mine[key], alone[key], "%s: %s" % (n, key))
            self.assertEqual(stage_hashes(os.path.join(out, n)), stage_hashes(run), n)
        tables = [subprocess.run([SMOE, "table", d], capture_output=True, text=True, check=True).stdout
                  for d in (out, one_by_one)]
        self.assertEqual(tables[0], tables[1])
        self.assertIn(tables[0], r.stdout)
        # --dry-run: the plan, the folders' state, nothing written.
        plan = subprocess.run([SMOE, "sweep", sweep, "--out", out, "--dry-run"], capture_output=True, text=True)
        self.assertEqual(plan.returncode, 0, plan.stderr)
        self.assertIn("experts.gamma-0.3_seed-1  [finished]  reuses experts.gamma-0.1_seed-1's stages before experts",
                      plan.stdout)
        self.assertIn("4 runs (4 finished); 2 from scratch, 2 reusing an earlier run's stages", plan.stdout)
        nowhere = os.path.join(self.tmp, "sweep-dry")
        plan = subprocess.run([SMOE, "sweep", sweep, "--out", nowhere, "--dry-run"], capture_output=True, text=True)
        self.assertIn("experts.gamma-0.1_seed-0  [to do]  from scratch", plan.stdout)
        self.assertFalse(os.path.exists(nowhere))

    def test_sweep_stops_on_sigterm_and_resumes(self):
        # SIGTERM to every rank (what Slurm's time limit does) right after the
        # first run's base epoch 1: every rank exits 75 (resumable), no group
        # starts another run, and the same command then finishes the sweep.
        sweep, out = self.write_sweep("sweep-stop", self.SMALL + ["base.epochs=3", "experts.epochs=1"], [0])
        cmd = mpirun(2) + [SMOE, "sweep", sweep, "--out", out, "--ranks-per-run", "1"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(ENV, SMOE_FAULT="termjob:base-epoch-1"),
                           timeout=HANG)
        err = p.stderr
        self.assertEqual(p.returncode, 75, err)
        self.assertIn("smoe sweep: stopped on a signal; run the same command again to continue (exit 75)", err)
        self.assertFalse(os.path.exists(os.path.join(out, "experts.gamma-0.3_seed-0", "report.json")))
        r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 0, r.stderr)
        for g in ("0.1", "0.3"):
            self.assertTrue(os.path.exists(os.path.join(out, "experts.gamma-%s_seed-0" % g, "report.json")))

    def test_until_stops_after_a_stage_and_resume_continues(self):
        # --until base trains the base model only (run.json records it, no
        # later stage, no report); --resume then runs the rest and gives the
        # report of an uninterrupted run. A name that is not a stage of the
        # scheme fails before anything is created.
        run = os.path.join(self.tmp, "until")
        r = self.train(2, run, "--until", "base")
        self.assertEqual(r.returncode, 0, r.stderr)
        done = read_json(os.path.join(run, "run.json"))["done"]
        self.assertIn("base", done)
        self.assertNotIn("embed", done)
        self.assertFalse(os.path.exists(os.path.join(run, "report.json")))
        # A run that has not finished is no model to export or predict with:
        # one line naming the stage, no file.
        out = os.path.join(self.tmp, "until-model")
        for cmd in (["export", "--out", out + ".pt"],
                    ["predict", "--input", self.data, "--out", out + ".h5"]):
            r = subprocess.run([SMOE] + cmd + ["--run-dir", run], capture_output=True, text=True, timeout=HANG)
            self.assertEqual(r.returncode, 1, cmd)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
            self.assertIn(run + ": stage 'embed' has not finished; run smoe train --resume first", r.stderr)
        self.assertFalse(os.path.exists(out + ".pt") or os.path.exists(out + ".h5"))
        r = self.train(2, run, "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_json(os.path.join(run, "report.json"))["moe"],
                         read_json(os.path.join(self.runs[2], "report.json"))["moe"])
        r = self.train(1, os.path.join(self.tmp, "until-bad"), "--until", "experts2")
        self.assertEqual(r.returncode, 1)
        self.assertIn("smoe: error: --until experts2: not a stage of scheme 'algorithm1' (base, embed, cluster, gate, "
                      "experts)", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "until-bad")))

    def scaling(self, np, *args):
        return subprocess.run(mpirun(np) + [SMOE, "scaling", "--config", QUICK] + self.common[:-1] + list(args),
                              capture_output=True, text=True, env=ENV, timeout=HANG)

    @staticmethod
    def scaling_rows(out):
        with open(os.path.join(out, "scaling.csv")) as f:
            return list(csv.DictReader(f))

    def test_scaling_study_strong_and_weak(self):
        # Strong: every stage of the quick config on 1 and 2 ranks, one after
        # the other inside one mpirun -np 2.
        out = os.path.join(self.tmp, "scaling-strong")
        r = self.scaling(2, "--ranks", "1,2", "--out", out, "--predict", "64,256")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        rows = self.scaling_rows(out)
        stages = ["base", "embed", "cluster", "gate", "experts", "eval"]
        self.assertEqual([(x["stage"], x["ranks"], x["source"]) for x in rows],
                         [(s, p, src) for s in stages for p, src in
                          (("1", "measured"), ("2", "measured"), ("64", "predicted"), ("256", "predicted"))])
        # The table's rows are the runs' reports.
        for p in (1, 2):
            report = read_json(os.path.join(out, "P%d" % p, "report.json"))
            self.assertEqual(report["ranks"], p)
            for x in rows:
                if x["ranks"] == str(p):
                    self.assertAlmostEqual(float(x["seconds"]), report["stages"][x["stage"]],
                                           delta=1e-5 * report["stages"][x["stage"]], msg=x["stage"])
                    sent = max(report["stage_comm"][x["stage"]]["sent_bytes"])
                    self.assertAlmostEqual(float(x["sent_bytes_max"]), sent, delta=1, msg=x["stage"])
        t = {(x["stage"], x["ranks"]): float(x["seconds"]) for x in rows}
        e = {(x["stage"], x["ranks"]): float(x["efficiency"]) for x in rows}
        self.assertAlmostEqual(e[("experts", "2")], t[("experts", "1")] / (2 * t[("experts", "2")]), places=4)
        # One rank moves nothing; on two, the base stage's allreduces move bytes.
        self.assertEqual(float([x for x in rows if x["stage"] == "base" and x["ranks"] == "1"][0]["sent_bytes_max"]), 0)
        self.assertGreater(float([x for x in rows if x["stage"] == "base" and x["ranks"] == "2"][0]["sent_bytes_max"]), 1e6)
        # The same results at both rank counts, checked by the study itself.
        self.assertRegex(r.stdout, r"check: the \d+ hashes of run.json .* and the \d+ accuracies of report.json are "
                                   r"equal at P = 1, 2")
        self.assertEqual(stage_hashes(os.path.join(out, "P1")), stage_hashes(os.path.join(out, "P2")))
        # The scheduler's simulation, given the run's own task seconds,
        # reproduces the experts stage's time within 25 %.
        replay = [x for x in rows if x["stage"] == "experts" and x["ranks"] == "2"][0]
        self.assertLess(abs(float(replay["replay_seconds"]) / float(replay["seconds"]) - 1), 0.25, replay)
        # 4 experts cannot fill 64 ranks; 3 micro-batches per step cannot fill 2.
        self.assertIn("warning: experts: 4 tasks (one per expert) cannot fill every rank; the best efficiency whole "
                      "units allow is P=64: 6% (94% idle)", r.stdout)
        self.assertIn("warning: base: 3 micro-batches per step cannot fill every rank; the best efficiency whole units "
                      "allow is P=2: 75% (25% idle)", r.stdout)
        for f in ("scaling.md", "scaling_time.png", "scaling_efficiency.png", "study.json"):
            self.assertTrue(os.path.getsize(os.path.join(out, f)) > 0, f)
        # Run again: nothing to redo; the table written again from the runs.
        r = self.scaling(2, "--ranks", "1,2", "--out", out, "--predict", "64,256")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("scaling: P=1 already finished", r.stdout)
        self.assertIn("scaling: P=2 already finished", r.stdout)
        self.assertEqual([x["seconds"] for x in self.scaling_rows(out) if x["source"] == "measured"],
                         [x["seconds"] for x in rows if x["source"] == "measured"])

        # Weak: N0 = 1,000 training samples per rank; only the experts and
        # the evaluation timed, the earlier stages run per P on every rank.
        weak = os.path.join(self.tmp, "scaling-weak")
        r = self.scaling(2, "--ranks", "1,2", "--mode", "weak", "--stages", "experts,eval", "--out", weak,
                         "--set", "data.limit_train=1000")
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        for p in (1, 2):
            report = read_json(os.path.join(weak, "P%d" % p, "report.json"))
            self.assertEqual((report["ranks"], report["train_samples"]), (p, 1000 * p))
        rows = self.scaling_rows(weak)
        self.assertEqual(sorted({x["stage"] for x in rows}), ["eval", "experts"])
        t = {(x["stage"], x["ranks"]): float(x["seconds"]) for x in rows}
        e = {(x["stage"], x["ranks"]): float(x["efficiency"]) for x in rows}
        self.assertAlmostEqual(e[("experts", "2")], t[("experts", "1")] / t[("experts", "2")], places=4)
        # The evaluation's test split does not grow: its efficiency is the strong one.
        self.assertAlmostEqual(e[("eval", "2")], t[("eval", "1")] / (2 * t[("eval", "2")]), places=4)
        self.assertIn("weak study: each rank count trains on its own number of samples", r.stdout)
        # The base stage ran once per P, with both ranks, before the timed stages.
        self.assertEqual(read_json(os.path.join(weak, "P1", "run.json"))["done"]["base"]["peak_rss_mb"].__len__(), 2)

        # Bad requests: one line each, nothing written.
        for args, message in (
                (["--ranks", "1,4", "--out", os.path.join(self.tmp, "s1")], "--ranks asks for 4 ranks but the job has 2"),
                (["--ranks", "2,1", "--out", os.path.join(self.tmp, "s2")], "--ranks must increase without repeats"),
                (["--ranks", "1", "--stages", "nope", "--out", os.path.join(self.tmp, "s3")],
                 "--stages: 'nope' is not a stage of scheme 'algorithm1'"),
                (["--ranks", "1", "--mode", "weak", "--set", "data.limit_train=0", "--out", os.path.join(self.tmp, "s4")],
                 "set data.limit_train to the training samples per rank"),
                (["--ranks", "1,2", "--mode", "weak", "--set", "data.limit_train=40000",
                  "--out", os.path.join(self.tmp, "s5")], "= 80000 samples, but split 'train'"),
                (["--ranks", "1,2", "--out", weak], "holds a study with another mode")):
            r = self.scaling(2, *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn(message, r.stderr, args)
            self.assertEqual(r.stderr.count("error"), 1, r.stderr)
            if not args[-1] == weak:
                self.assertFalse(os.path.exists(args[args.index("--out") + 1]), args)

    def test_sweep_refuses_groups_larger_than_the_job(self):
        r = subprocess.run(mpirun(2) + [SMOE, "sweep", os.path.join(SRC, "configs/sweeps/royer-table6-ensembling.yaml"),
                                        "--out", os.path.join(self.tmp, "never"), "--ranks-per-run", "3"],
                           capture_output=True, text=True, env=ENV, timeout=HANG)
        self.assertEqual(r.returncode, 1)
        self.assertIn("smoe: error: smoe sweep: --ranks-per-run 3 is not between 0 and the job's 2 ranks", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "never")))

    def test_config_print(self):
        r = subprocess.run([SMOE, "config", "--print", "--config", QUICK, "--set", "experts.count=7"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("  count: 7  # number of experts K", r.stdout)
        self.assertIn("  limit_train: 3000", r.stdout)


if __name__ == "__main__":
    unittest.main()
