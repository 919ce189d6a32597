#!/usr/bin/python3
"""The device pieces of bench_throughput written in PyTorch, as its careful
users write them, so that launch/gpu-check.sh can pair the two on one GPU:

  base step    forward and backward of the tiny-ResNet in micro-batches,
               then an SGD step (lr 0.05, momentum 0.9 Nesterov, weight decay
               5e-4: smoe's base defaults), on a batch already on the device;
  expert step  the blocks after 3 and the classifier on the frozen trunk's
               features of the same batch, one step per batch.

It reads what bench_throughput wrote with --json FILE (the settings, the
device, the precision smoe used, and the batch itself in FILE.batch) and
runs the same: the same images, shapes, micro-batches and step count;
autocast to the same type, torch.amp's GradScaler where smoe scales the loss
(float16), channels-last when smoe used it, cuDNN's autotuner as set there.
Prints one JSON object (images/s of each piece).

  bench/throughput_pytorch.py FILE.json [--threads T]

Needs torch only (no h5py, no numpy): it runs on a bare GPU machine's Python.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_resnet import TinyResNet  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(model, params, forward, images, labels, micro, steps, s, device):
    """Images/s of `steps` steps (after 3 warm-up steps)."""
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(s["precision"])
    scaling = s["loss_scaling"] and device.type == "cuda"
    try:
        scaler = torch.amp.GradScaler("cuda", enabled=scaling)  # torch 2.3 and later
    except (AttributeError, TypeError):
        scaler = torch.cuda.amp.GradScaler(enabled=scaling)
    model.train()
    n = images.size(0)

    def step():
        opt.zero_grad(set_to_none=True)
        for i in range(0, n, micro):
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(forward(images[i:i + micro]), labels[i:i + micro])
            scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", help="the JSON file bench_throughput --json wrote")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    s = json.load(open(a.settings))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = bool(s.get("cudnn_benchmark", False))
    device = torch.device(s["device"])
    c, h, w = s["image_shape"]
    n, classes, width = s["batch"], s["num_classes"], s["width"]
    raw = torch.from_file(s["batch_file"], size=n * c * h * w * 4 + n * 8, dtype=torch.uint8)
    images = raw[: n * c * h * w * 4].view(torch.float32).view(n, c, h, w).to(device)
    labels = raw[n * c * h * w * 4:].view(torch.int64).to(device)
    layout = torch.channels_last if s["channels_last"] else torch.contiguous_format

    base = TinyResNet(10, width, c, classes).to(device, memory_format=layout)
    x = images.contiguous(memory_format=layout)
    base_rate = step_rate(base, base.parameters(), lambda v: base.head(base.blocks(v, 0, 5)), x, labels,
                          s["micro"], s["steps"], s, device)

    with torch.no_grad():
        base.eval()
        feats = base.blocks(x, 0, 3).contiguous(memory_format=layout)
    expert = TinyResNet(10, width, c, classes).to(device, memory_format=layout)
    tail = [p for name, p in expert.named_parameters() if name.split(".")[0] in ("block3", "block4", "fc")]
    expert_rate = step_rate(expert, tail, lambda v: expert.head(expert.blocks(v, 3, 5)), feats, labels,
                            n, s["steps"], s, device)
    print(json.dumps({"torch": torch.__version__, "device": str(device), "precision": s["precision"],
                      "channels_last": s["channels_last"], "base_step_images_per_s": base_rate,
                      "expert_step_images_per_s": expert_rate}))


if __name__ == "__main__":
    main()
