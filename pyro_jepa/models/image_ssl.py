"""What every two-view image method shares: backbone, augmentations, embedding, held-out views."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.vision import TwoViewAugment, make_backbone, normalize, to_float
from .base import SSLMethod

EVAL_CHUNK = 512
# Held-out views are drawn from this seed so validation losses and anomaly scores are repeatable.
EVAL_VIEW_SEED = 1234


@dataclass
class ImageSSLConfig:
    """Backbone and augmentation settings common to VJE, SimSiam and VICReg."""

    backbone: str = "convnet"
    width: int = 32
    image_size: int = 32
    crop_min: float = 0.2


class ImageSSL(SSLMethod):
    """A backbone trained on two augmented views per image; representations are backbone outputs."""

    def __init__(self, config: ImageSSLConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = make_backbone(config.backbone, config.width)
        self.dim = self.backbone.out_dim
        self.augment = TwoViewAugment(config.image_size, scale=(config.crop_min, 1.0))

    def views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone embeddings ``(B, d)`` of two random views of each image."""
        return self.backbone(self.augment(images, generator)), self.backbone(self.augment(images, generator))

    def two_view_loss(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
        """The method's objective on a batch of paired embeddings."""
        raise NotImplementedError

    def loss(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        return self.two_view_loss(*self.views(rows))

    @torch.no_grad()
    def diagnostics(self, rows: torch.Tensor, step: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(EVAL_VIEW_SEED)
        total = sum(float(self.two_view_loss(*self.views(c, generator))) * len(c) for c in rows.split(EVAL_CHUNK))
        return {"loss": total / len(rows)}

    @torch.no_grad()
    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(N, d)`` of the un-augmented images, resized to the training size."""
        out = []
        for chunk in rows.split(EVAL_CHUNK):
            x = to_float(chunk)
            if x.shape[-1] != self.config.image_size:
                x = F.interpolate(x, size=self.config.image_size, mode="bilinear", antialias=True, align_corners=False)
            out.append(self.backbone(normalize(x)))
        return torch.cat(out)
