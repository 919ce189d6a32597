"""The layers of docs/architecture.md, checked on the sources: a file under
src/<layer>/ may include only headers of the layers below it (and its own).
The build enforces the same direction at link time (one static library per
layer, linked downwards); this check also catches an upward include of a
header-only piece, which would compile and link silently."""
import os
import re
import sys
import unittest

SRC = os.path.join(os.environ.get("SMOE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../..")), "src")

# layer -> layers it may include (besides itself)
ALLOWED = {
    "core": set(),
    "comm": {"core"},
    "data": {"core"},
    "models": {"core"},
    "cluster": {"core", "comm", "models"},
    "train": {"core", "comm", "data", "models"},
    "eval": {"core"},
    "pipeline": {"core", "comm", "data", "models", "cluster", "train", "eval"},
    "apps": {"core", "comm", "data", "models", "cluster", "train", "eval", "pipeline", "data_tools"},
}
# Folders beside src/ that hold a layer of their own: data_tools (the dataset
# converters of smoe-data) sits above data and below apps.
OUTSIDE = {"data_tools": {"core", "data"}}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/', re.M)


def violations():
    found = []
    folders = [(layer, os.path.join(SRC, layer), ALLOWED[layer]) for layer in ALLOWED]
    folders += [(layer, os.path.join(SRC, "..", layer), OUTSIDE[layer]) for layer in OUTSIDE]
    for layer, folder, allowed in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    for target in INCLUDE.findall(f.read()):
                        if target != layer and target not in allowed:
                            found.append("%s includes %s/" % (os.path.relpath(path, SRC), target))
    return found


class Layering(unittest.TestCase):
    def test_every_layer_is_known(self):
        layers = {d for d in os.listdir(SRC) if os.path.isdir(os.path.join(SRC, d))}
        self.assertEqual(layers, set(ALLOWED))

    def test_no_upward_include(self):
        self.assertEqual(violations(), [])


if __name__ == "__main__":
    unittest.main()
