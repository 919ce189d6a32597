#!/usr/bin/python3
"""The expert stage of a finished smoe run, written in PyTorch-Python: the
same tiny-ResNet (it loads smoe's base.pt), the same g0 (cluster.pt), the
same hyperparameters (config.yaml), experts trained one after the other in
one process. Three ways of writing it:

  (default)  data from the HDF5 shards through h5py and a DataLoader, sample
             by sample, the frozen trunk run on every batch (a first draft);
  --preload  the splits read into tensors first, still a DataLoader and the
             trunk on every batch;
  --careful  what a careful PyTorch user writes: tensors preloaded, the whole
             split normalised at once, the frozen trunk's features computed
             once (inside the clock, as smoe's trunk cache is), mini-batches
             drawn by indexing those tensors (no DataLoader). Algorithmically
             the same as smoe's expert stage.

  bench/pytorch_experts.py RUN_DIR [--threads 1] [--preload | --careful]

Prints the wall time of the expert stage (experts and stacking ensemblers;
the base model's training logits are computed before the clock starts, as
smoe's embed stage does) and the test accuracy of every expert bagged with
the base model, averaged over the experts (the same measure is computed on
smoe's own expert checkpoints in RUN_DIR/experts, for a side-by-side check).
"""
import argparse
import json
import math
import os
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_resnet import TinyResNet  # noqa: E402


class ShardDataset(torch.utils.data.Dataset):
    """Samples [0, limit) of a split, read image by image from the HDF5 shards."""

    def __init__(self, folder, split, limit, preload=False):
        m = json.load(open(os.path.join(folder, "manifest.json")))
        self.shards = m["splits"][split]["shards"]
        self.folder = folder
        self.n = min(limit, m["splits"][split]["count"]) if limit else m["splits"][split]["count"]
        self.mean = torch.tensor(m["mean"]).view(-1, 1, 1)
        self.std = torch.tensor(m["std"]).view(-1, 1, 1)
        self.files = {}
        self.images = None
        if preload:  # the whole split in memory, read shard by shard with h5py
            imgs, labs = [], []
            for s in self.shards:
                with h5py.File(os.path.join(folder, s["file"]), "r") as f:
                    imgs.append(f["images"][:])
                    labs.append(f["labels"][:])
            self.images = torch.from_numpy(np.concatenate(imgs)[: self.n])
            self.labels = torch.from_numpy(np.concatenate(labs)[: self.n])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.images is not None:
            x = self.images[i].float() / 255.0
            return (x - self.mean) / self.std, int(self.labels[i]), i
        for s in self.shards:
            if s["offset"] <= i < s["offset"] + s["count"]:
                f = self.files.get(s["file"])
                if f is None:
                    f = self.files[s["file"]] = h5py.File(os.path.join(self.folder, s["file"]), "r")
                j = i - s["offset"]
                x = torch.from_numpy(f["images"][j].astype(np.float32) / 255.0)
                return (x - self.mean) / self.std, int(f["labels"][j]), i
        raise IndexError(i)


def lr_at(o, step, per_epoch):
    total, warm = o["epochs"] * per_epoch, o.get("warmup_epochs", 0) * per_epoch
    if step < warm:
        return o["lr"] * (step + 1) / warm
    if o["schedule"] == "constant":
        return o["lr"]
    t = min((step - warm) / max(total - warm, 1), 1.0)
    return 0.5 * o["lr"] * (1 + math.cos(math.pi * t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preload", action="store_true", help="read the splits into memory first (outside the clock)")
    ap.add_argument("--careful", action="store_true",
                    help="preloaded tensors, trunk features computed once, batches by indexing (no DataLoader)")
    a = ap.parse_args()
    a.preload = a.preload or a.careful
    torch.set_num_threads(a.threads)
    cfg = yaml.safe_load(open(os.path.join(a.run, "config.yaml")))
    d, m, ex, en = cfg["data"], cfg["model"], cfg["experts"], cfg["ensembler"]
    data_path = d["path"]
    train = ShardDataset(data_path, d["train_split"], d["limit_train"], a.preload)
    test = ShardDataset(data_path, d["test_split"], d["limit_test"], a.preload)
    manifest = json.load(open(os.path.join(data_path, "manifest.json")))
    in_ch, classes = manifest["image_shape"][0], manifest["num_classes"]
    base = TinyResNet(m["depth"], m["width"], in_ch, classes)
    base.load_state_dict(torch.load(os.path.join(a.run, "base.pt")), strict=False)
    base.eval()
    K, b = ex["count"], ex["branch_after"]
    # g0.f32: float32 [N, K] in id order.
    g0 = torch.from_numpy(np.fromfile(os.path.join(a.run, "g0.f32"), dtype="<f4").reshape(len(train), K))
    B = ex["batch_size"]

    with torch.no_grad():
        base_logits = torch.cat([base.head(base.blocks(x, 0, 5))
                                 for x, _, _ in torch.utils.data.DataLoader(train, batch_size=500)])

    start = time.time()
    build = careful_experts if a.careful else dataloader_experts
    experts = build(train, base, g0, ex, en, base_logits, m, in_ch, classes, K, b, B)
    seconds = time.time() - start

    # smoe's experts from their checkpoints, for the same measure.
    smoe_experts = []
    for k in range(K):
        path = os.path.join(a.run, "experts", "expert-%03d.pt" % k)
        if os.path.exists(path):
            e = TinyResNet(m["depth"], m["width"], in_ch, classes)
            e.load_state_dict(base.state_dict())
            e.load_state_dict(torch.load(path), strict=False)
            e.eval()
            smoe_experts.append(e)
    print(json.dumps({"expert_stage_seconds": seconds, "experts": K, "threads": a.threads, "preload": a.preload,
                      "careful": a.careful, "bagged_expert_accuracy": bagged_accuracy(test, base, experts),
                      "smoe_bagged_expert_accuracy": bagged_accuracy(test, base, smoe_experts)
                      if len(smoe_experts) == K else None}))


def bagged_accuracy(test, base, experts):
    """Test accuracy of each expert bagged with the base model (mean of the
    two softmaxes), averaged over the experts."""
    with torch.no_grad():
        correct, total = 0, 0
        for x, y, _ in torch.utils.data.DataLoader(test, batch_size=500):
            bl = F.softmax(base.head(base.blocks(x, 0, 5)), 1)
            for e in experts:
                correct += int(((bl + F.softmax(e.head(e.blocks(x, 0, 5)), 1)).argmax(1) == y).sum())
            total += len(y)
    return correct / (total * len(experts))


def dataloader_experts(train, base, g0, ex, en, base_logits, m, in_ch, classes, K, b, B):
    """The expert stage through a DataLoader, the frozen trunk run on every
    batch (the default and --preload versions)."""
    experts = []
    for k in range(K):
        expert = TinyResNet(m["depth"], m["width"], in_ch, classes)
        expert.load_state_dict(base.state_dict())
        # The trunk (blocks < branch_after) stays frozen.
        params = [p for name, p in expert.named_parameters() if name.startswith("fc") or
                  (name.startswith("block") and int(name[5]) >= b)]
        opt = torch.optim.SGD(params, lr=ex["lr"], momentum=ex["momentum"], weight_decay=ex["weight_decay"],
                              nesterov=ex["nesterov"])
        w_all = g0[:, k].clamp(ex["gamma"], 1.0)
        loader = torch.utils.data.DataLoader(train, batch_size=B, shuffle=True, num_workers=0)
        per_epoch = len(loader)
        step = 0
        for epoch in range(ex["epochs"]):
            for x, y, idx in loader:
                for g in opt.param_groups:
                    g["lr"] = lr_at(ex, step, per_epoch)
                step += 1
                with torch.no_grad():
                    expert.eval()
                    h = expert.blocks(x, 0, b)
                for name in ("block%d" % i for i in range(b, 5)):
                    getattr(expert, name).train()
                logits = expert.head(expert.blocks(h, b, 5))
                loss = (w_all[idx] * F.cross_entropy(logits, y, reduction="none")).sum() / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
        expert.eval()
        # Stacking ensembler on the frozen logits.
        with torch.no_grad():
            outs, ys = [], []
            for x, y, _ in torch.utils.data.DataLoader(train, batch_size=500):
                outs.append(expert.head(expert.blocks(x, 0, 5)))
                ys.append(y)
            exp_logits, ys = torch.cat(outs), torch.cat(ys)
        train_stacking(base_logits, exp_logits, ys, w_all, classes, en)
        experts.append(expert)
        print("pytorch: expert %d done" % k, file=sys.stderr)
    return experts


def train_stacking(base_logits, exp_logits, ys, w_all, classes, en):
    """The stacking ensembler d_k on the frozen logits, started as their average."""
    st = nn.Linear(2 * classes, classes)
    with torch.no_grad():
        eye = torch.eye(classes) * 0.5
        st.weight.copy_(torch.cat([eye, eye], 1))
        st.bias.zero_()
    sopt = torch.optim.SGD(st.parameters(), lr=en["lr"], momentum=en["momentum"], nesterov=en["nesterov"])
    inputs = torch.cat([base_logits, exp_logits], 1)
    n = len(ys)
    for epoch in range(en["epochs"]):
        perm = torch.randperm(n)
        for s in range(0, n, en["batch_size"]):
            idx = perm[s:s + en["batch_size"]]
            loss = (w_all[idx] * F.cross_entropy(st(inputs[idx]), ys[idx], reduction="none")).sum() / len(idx)
            sopt.zero_grad(set_to_none=True)
            loss.backward()
            sopt.step()
    return st


def careful_experts(train, base, g0, ex, en, base_logits, m, in_ch, classes, K, b, B):
    """The expert stage as a careful PyTorch user writes it (see --careful)."""
    x_all = (train.images.float().div_(255.0) - train.mean) / train.std  # the whole split at once
    y_all = train.labels.long()
    n = len(y_all)
    with torch.no_grad():
        feats = torch.cat([base.blocks(x_all[s:s + 500], 0, b) for s in range(0, n, 500)])
    experts = []
    per_epoch = (n + B - 1) // B
    for k in range(K):
        expert = TinyResNet(m["depth"], m["width"], in_ch, classes)
        expert.load_state_dict(base.state_dict())
        tail = [getattr(expert, "block%d" % i) for i in range(b, 5)] + [expert.fc]
        params = [p for t in tail for p in t.parameters()]
        opt = torch.optim.SGD(params, lr=ex["lr"], momentum=ex["momentum"], weight_decay=ex["weight_decay"],
                              nesterov=ex["nesterov"])
        w_all = g0[:, k].clamp(ex["gamma"], 1.0)
        for t in tail:
            t.train()
        step = 0
        for epoch in range(ex["epochs"]):
            perm = torch.randperm(n)
            for s in range(0, n, B):
                idx = perm[s:s + B]
                for g in opt.param_groups:
                    g["lr"] = lr_at(ex, step, per_epoch)
                step += 1
                logits = expert.head(expert.blocks(feats[idx], b, 5))
                loss = (w_all[idx] * F.cross_entropy(logits, y_all[idx], reduction="none")).sum() / len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        expert.eval()
        with torch.no_grad():
            exp_logits = torch.cat([expert.head(expert.blocks(feats[s:s + 500], b, 5)) for s in range(0, n, 500)])
        train_stacking(base_logits, exp_logits, y_all, w_all, classes, en)
        experts.append(expert)
    return experts


if __name__ == "__main__":
    main()
