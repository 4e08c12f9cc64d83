"""The CIFAR ResNet of He et al. (2016, section 4.2), laid out like chenyaofo/pytorch-cifar-models.

Parameter names follow that repository (``conv1``, ``layer2.0.downsample.0``, ``fc`` ...) so its
published CIFAR-10 weights load with a strict ``load_state_dict``. The same names, blocks and
projection shortcuts make up the bearpaw/pytorch-classification ResNet that Cohen et al. (2019)
trained, so their ``cifar_resnet20``/``cifar_resnet110`` weights load here too (their final
``AvgPool2d(8)`` is this adaptive pool on 32x32 inputs).
"""

from __future__ import annotations

import torch
from torch import nn

# depth -> BasicBlocks per stage (depth = 6n + 2)
CIFAR_RESNET_BLOCKS: dict[str, int] = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection; a 1x1 conv+BN projects when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """3x3 conv (16) then three stages of ``blocks`` BasicBlocks at widths 16/32/64, pool, linear."""

    def __init__(self, blocks: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        first = BasicBlock(in_planes, planes, stride)
        return nn.Sequential(first, *(BasicBlock(planes, planes, 1) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(name: str, num_classes: int = 10) -> CifarResNet:
    """Build ``resnet20``/``32``/``44``/``56`` with freshly initialised weights."""
    if name not in CIFAR_RESNET_BLOCKS:
        raise ValueError(f"unknown CIFAR ResNet {name!r}; choose one of {sorted(CIFAR_RESNET_BLOCKS)}")
    return CifarResNet(CIFAR_RESNET_BLOCKS[name], num_classes)


def cifar_resnet_of_depth(depth: int, num_classes: int = 10) -> CifarResNet:
    """The ``depth = 6n + 2`` layer network with freshly initialised weights, e.g. 110 for Cohen et al.'s."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, ...), not {depth}")
    return CifarResNet((depth - 2) // 6, num_classes)
