"""smoe's tiny ResNets (models/network.cpp) in PyTorch, with smoe's parameter
names (block0..block4, fc), so that a smoe checkpoint loads into them: the
networks of the PyTorch baselines under bench/. Needs torch only."""
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, pool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(y, 2) if self.pool else y


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = stride != 1 or cin != cout
        if self.down:
            self.down_conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.down_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.down_bn(self.down_conv(x)) if self.down else x))


class TinyResNet(nn.Module):
    """smoe's tiny_resnet with the same parameter names (block0..block4, fc)."""

    def __init__(self, depth, width, in_ch, classes):
        super().__init__()
        depths = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]
        widths = [width, width, 2 * width, 4 * width, 8 * width]
        self.block0 = ConvBlock(in_ch, width, False)
        for b in range(1, 5):
            layers = [BasicBlock(widths[b - 1] if i == 0 else widths[b], widths[b], (1 if b == 1 else 2) if i == 0 else 1)
                      for i in range(depths[b - 1])]
            setattr(self, "block%d" % b, nn.Sequential(*layers))
        self.fc = nn.Linear(8 * width, classes)

    def blocks(self, x, start, end):
        for b in range(start, end):
            x = getattr(self, "block%d" % b)(x)
        return x

    def head(self, h):
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
