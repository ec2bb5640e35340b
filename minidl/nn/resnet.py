"""Residual networks for 32x32 images (CIFAR-10): BasicBlock, ResNet, resnet18, resnet20/32/44/56.

- ``resnet18``: He et al. (2016)'s ResNet-18 adapted to 32x32 inputs as is usual for CIFAR
  (a 3x3 stride-1 stem and no max-pool; widths 64/128/256/512, two blocks per stage,
  projection shortcuts): 11,173,962 parameters with 10 classes.
- ``resnet20`` (and 32/44/56): the CIFAR networks of He et al. (2016), section 4.2:
  widths 16/32/64, n blocks per stage (6n + 2 layers), parameter-free shortcuts
  ("option A": subsample, then pad channels with zeros): 269,722 parameters for ResNet-20.

Names follow torchvision (conv1, bn1, layer1..., downsample, avgpool, fc).  Convolutions
are initialised with kaiming_normal_(mode='fan_out', nonlinearity='relu') and BatchNorm
with weight 1, bias 0, as torchvision does.
"""
from minidl import ops
from minidl.autograd import Tensor
from minidl.nn import functional as F
from minidl.nn import init
from minidl.nn.container import Sequential
from minidl.nn.conv import Conv2d
from minidl.nn.linear import Linear
from minidl.nn.module import Module
from minidl.nn.normalization import BatchNorm2d
from minidl.nn.pooling import AdaptiveAvgPool2d


class PadShortcut(Module):
    """The parameter-free shortcut ("option A"): x[:, :, ::stride, ::stride] with zero channels
    added on both sides to reach out_channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"PadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        y = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return y
        n, _, h, w = y.shape
        left = Tensor(x.xp.zeros((n, extra // 2, h, w), dtype=x.dtype))
        right = Tensor(x.xp.zeros((n, extra - extra // 2, h, w), dtype=x.dtype))
        return ops.cat([left, y, right], axis=1)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions; the
    shortcut is the identity unless the stride or the width changes, then a 1x1 convolution
    with BatchNorm (shortcut='B') or PadShortcut (shortcut='A')."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (1x1 projection), got {shortcut!r}")
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.downsample = (Sequential(Conv2d(in_planes, planes, 1, stride=stride, bias=False), BatchNorm2d(planes))
                               if shortcut == "B" else PadShortcut(in_planes, planes, stride))
        else:
            self.downsample = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(Module):
    """conv3x3 stem -> stages of blocks (the first at stride 1, the others at stride 2) ->
    global average pooling -> Linear."""

    def __init__(self, block, num_blocks, widths, num_classes: int = 10, in_channels: int = 3, shortcut: str = "B"):
        super().__init__()
        if len(num_blocks) != len(widths):
            raise ValueError(f"num_blocks {num_blocks} and widths {widths} must have the same length")
        self.conv1 = Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, (n, width) in enumerate(zip(num_blocks, widths)):
            blocks = []
            for j in range(n):
                stride = 1 if i == 0 or j > 0 else 2
                blocks.append(block(in_planes, width, stride, shortcut))
                in_planes = width * block.expansion
            setattr(self, f"layer{i + 1}", Sequential(*blocks))
        self.num_stages = len(widths)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc = Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(F.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool): 11,173,962 parameters for 10 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, shortcut="B")


def _cifar_resnet(n, num_classes, in_channels, shortcut):
    return ResNet(BasicBlock, [n, n, n], [16, 32, 64], num_classes, in_channels, shortcut)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    """ResNet-20 of He et al. (2016) for CIFAR: 269,722 parameters (option A shortcuts, 10 classes)."""
    return _cifar_resnet(3, num_classes, in_channels, shortcut)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return _cifar_resnet(5, num_classes, in_channels, shortcut)


def resnet44(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return _cifar_resnet(7, num_classes, in_channels, shortcut)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return _cifar_resnet(9, num_classes, in_channels, shortcut)
