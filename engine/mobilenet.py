"""MobileNetV2 in plain ``torch.nn``: torchvision's architecture, so its ImageNet weights load as they are.

There is no CPU build of torchvision here, so the network is written out (Sandler et al. 2018,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", as torchvision builds it): the module
names and shapes match torchvision's ``mobilenet_v2``, so ``mobilenet_v2-b0353104.pth`` loads with
``strict=True`` (314 tensors). ``features`` ends in 1280 channels; their global average is the
embedding (``embed``), the classifier on top gives the 1000 ImageNet logits (``forward``).

Imported only when the ``semantic`` extra (torch) is installed: see ``engine.embedding``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (expansion t, output channels c, repeats n, first stride s): the paper's table 2
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
FIRST_CHANNELS = 32
EMBEDDING_DIM = 1280
IMAGENET_CLASSES = 1000


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias), batch norm, ReLU6: torchvision's ``Conv2dNormActivation``."""

    def __init__(self, inp: int, out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); a shortcut when the shape is kept."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = IMAGENET_CLASSES):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, FIRST_CHANNELS, stride=2)]
        channels = FIRST_CHANNELS
        for t, c, n, s in INVERTED_RESIDUALS:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(ConvBNReLU(channels, EMBEDDING_DIM, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(EMBEDDING_DIM, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, 1280): the last features, averaged over the image."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """For inference (eval mode): every Conv2d followed by a BatchNorm2d in a Sequential becomes one
    Conv2d with the norm folded into its weights and a bias. The same outputs up to float rounding
    (5e-6 on the embedding), one pass over each feature map fewer. Changes ``module`` in place."""
    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        layers, folded = list(module), []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            folded.append(layer)
        module._modules.clear()
        for i, layer in enumerate(folded):
            module.add_module(str(i), layer)
    return module
