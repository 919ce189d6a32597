"""The paper's tiny-ImageNet config (configs/royer/tiny-imagenet.yaml:
tiny-ResNet-18 width 64, 20 experts, 8 micro-batches per base step) as a
scaling study: measured at P = 1, 2 on a short version of it, then predicted
at 64 and 256 ranks for the full config.

No tiny-ImageNet here: the short version trains on N synthetic 3 x 64 x 64
images of 200 classes (bench/memory_scaling.py's colour blobs) for one base
epoch, one expert epoch and one ensembler epoch, evaluated on N test images;
everything else (the network, the 20 experts, batch 128 / micro-batch 16)
is the paper's. `smoe scaling --table --work-scale` then scales each stage's
measured work to the full config's (100,000 training images, 100 base and
expert epochs, 10,000 validation images):
  base, experts   100 epochs x 100,000 images / (1 epoch x N)
  embed, cluster, gate   100,000 / N
  eval            10,000 / N
Compute is taken as linear in samples x epochs (docs/scaling.md). The times
are for ranks like this machine's CPU cores; what the prediction says about
a cluster is the efficiency, set by the 20 experts and the 8 micro-batches.

  /usr/bin/python3 bench/scaling_tiny_imagenet.py [--n 128] [--out runs/scaling-tiny-imagenet] [--bin build/bin]
      [--latency-us 2 --bandwidth-gbs 25]   (the predictions with a cluster's interconnect)
"""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory_scaling import ENV, SRC, make_npy  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128, help="training (and test) images of the short version")
    ap.add_argument("--out", default=os.path.join(SRC, "runs/scaling-tiny-imagenet"))
    ap.add_argument("--bin", default=os.path.join(SRC, "build/bin"))
    ap.add_argument("--latency-us", type=float)
    ap.add_argument("--bandwidth-gbs", type=float)
    a = ap.parse_args()
    smoe = os.path.join(a.bin, "smoe")
    data = a.out + "-data"
    if not os.path.exists(os.path.join(data, "manifest.json")):
        src = data + "-npy"
        shutil.rmtree(src, ignore_errors=True)
        make_npy(src, a.n, a.n, classes=200)
        subprocess.run([os.path.join(a.bin, "smoe-data"), "convert", "npy", src, data], check=True,
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(src)
    sets = ["data.path=" + data, "data.test_split=test", "data.limit_train=%d" % a.n, "base.epochs=1",
            "base.warmup_epochs=0", "experts.epochs=1", "ensembler.epochs=1", "runtime.threads=1"]
    cmd = ["mpirun", "-np", "2", "--bind-to", "core", smoe, "scaling", "--config",
           os.path.join(SRC, "configs/royer/tiny-imagenet.yaml"), "--ranks", "1,2", "--out", a.out, "-q"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, env=ENV)
    full_steps = 100 * 100000 / a.n
    table = [smoe, "scaling", "--table", a.out, "--predict", "64,256",
             "--work-scale", "base=%g" % full_steps, "--work-scale", "experts=%g" % full_steps,
             "--work-scale", "embed=%g" % (100000 / a.n), "--work-scale", "cluster=%g" % (100000 / a.n),
             "--work-scale", "gate=%g" % (100000 / a.n), "--work-scale", "eval=%g" % (10000 / a.n)]
    if a.latency_us is not None:
        table += ["--latency-us", str(a.latency_us), "--bandwidth-gbs", str(a.bandwidth_gbs)]
    return subprocess.run(table).returncode


if __name__ == "__main__":
    sys.exit(main())
