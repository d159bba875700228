"""Image backbones and the two-view SSL augmentations, applied per batch on the device.

Backbones map float images ``(B, 3, H, W)`` (already normalized) to ``(B, out_dim)``:

- ``resnet18``: torchvision ResNet-18 with the CIFAR stem (3×3 stride-1 conv, no max-pool), 512-d.
- ``convnet``: a 4-stage Conv-BN-ReLU net with global average pooling, small enough for CPU runs.

`TwoViewAugment` is the SimCLR/BYOL recipe (random resized crop, horizontal flip, color jitter,
random grayscale, Gaussian blur for images ≥ 64 px). torchvision's v2 transforms draw *one* parameter
set per call, which on a batch would give every image the same crop; so crop and flip are one
batched ``grid_sample`` with per-image affine grids, jitter is per-image tensor arithmetic, and
grayscale/blur use ``torchvision.transforms.v2.functional``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.transforms.v2 import functional as TF

# Channel statistics of CIFAR-10; close enough for any natural-image dataset at this scale.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` in [0, 255] -> float in [0, 1] (float input passes through)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standardization of [0, 1] images."""
    mean = x.new_tensor(MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


class ConvNet(nn.Module):
    """Conv-BN-ReLU stages (widths ``w, 2w, 4w, 8w``, stride 2 after the first), global average pool."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def resnet18_cifar() -> nn.Module:
    """torchvision ResNet-18 with the CIFAR stem and no classifier (512-d output)."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


def make_backbone(name: str, width: int = 32) -> nn.Module:
    """``convnet`` (``width`` sets its size) or ``resnet18``; the module has an ``out_dim`` attribute."""
    if name == "convnet":
        return ConvNet(width)
    if name == "resnet18":
        return resnet18_cifar()
    raise ValueError(f"unknown backbone {name!r}; choose 'convnet' or 'resnet18'")


class TwoViewAugment:
    """Random SSL views of a uint8 or [0, 1] float batch, returned normalized.

    Args:
        size: output side length (crops are resized to it).
        scale: area range of the random resized crop.
        jitter: brightness/contrast/saturation strength (hue gets a quarter of it), applied with
            probability ``p_jitter``.
        p_gray: probability of grayscale.
        blur: Gaussian blur with probability 0.5 (the BYOL rate); default only when ``size >= 64``.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        jitter: float = 0.4,
        p_jitter: float = 0.8,
        p_gray: float = 0.2,
        blur: bool | None = None,
    ) -> None:
        self.size, self.scale, self.jitter, self.p_jitter, self.p_gray = size, scale, jitter, p_jitter, p_gray
        self.blur = size >= 64 if blur is None else blur

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random view per image. Random parameters are drawn on the CPU (from ``generator``,
        else torch's global RNG, which the engine checkpoints) and moved to the batch's device."""
        x = to_float(images)
        b = x.shape[0]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(x.device)

        x = self._crop_flip(x, rand)
        x = self._color_jitter(x, rand)
        gray = rand(b).lt(self.p_gray).view(b, 1, 1, 1)
        x = torch.where(gray, TF.rgb_to_grayscale(x, num_output_channels=3), x)
        if self.blur:
            # A per-image sigma would need a loop; one sigma per batch keeps it a single conv.
            sigma = float(0.1 + 1.9 * rand(1))
            blurred = TF.gaussian_blur(x, kernel_size=2 * round(self.size / 20) + 1, sigma=sigma)
            x = torch.where(rand(b).lt(0.5).view(b, 1, 1, 1), blurred, x)
        return normalize(x)

    def _crop_flip(self, x: torch.Tensor, rand) -> torch.Tensor:
        b = x.shape[0]
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * rand(b)
        log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b)
        ratio = log_ratio.exp()
        # Half-widths of the crop in grid coordinates [-1, 1], clipped to the image.
        w = (area * ratio).sqrt().clamp(max=1.0)
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (1 - w) * (2 * rand(b) - 1)
        cy = (1 - h) * (2 * rand(b) - 1)
        flip = torch.where(rand(b).lt(0.5), -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, (b, 3, self.size, self.size), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _color_jitter(self, x: torch.Tensor, rand) -> torch.Tensor:
        b, s = x.shape[0], self.jitter
        apply = rand(b).lt(self.p_jitter).view(b, 1, 1, 1)

        def factor() -> torch.Tensor:
            return (1 + s * (2 * rand(b) - 1)).view(b, 1, 1, 1)

        y = x * factor()  # brightness
        mean = TF.rgb_to_grayscale(y).mean((1, 2, 3), keepdim=True)
        y = (y - mean) * factor() + mean  # contrast
        gray = TF.rgb_to_grayscale(y)
        y = (y - gray) * factor() + gray  # saturation
        y = _rotate_hue(y, (s / 4) * (2 * rand(b) - 1) * 2 * math.pi)
        return torch.where(apply, y.clamp(0, 1), x)


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Hue shift as a rotation about the gray axis (exact in YIQ space), one angle per image."""
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    c, s = angle.cos(), angle.sin()
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq
    return torch.einsum("bij,bjhw->bihw", m, x)
