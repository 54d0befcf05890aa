"""The one interface every classification model exposes to the distiller.

A model implements :meth:`ClsNet.forward_stages` (the stage feature maps, the last one
being the map that is globally average-pooled into the penultimate embedding) and
:meth:`ClsNet.get_classifier` (the module mapping that embedding to logits). Everything
the losses need is then derived in one place, :meth:`ClsNet.forward`, so no loss method
needs model-specific code.
"""
from typing import Dict, List, Sequence, Union

import torch
from torch import nn

__all__ = ["ClsNet"]


class ClsNet(nn.Module):
    """Base class (or mixin, first in the MRO) of every model of the zoo.

    Subclasses set ``self.stage_channels`` (channels of each map returned by
    :meth:`forward_stages`) and implement the two abstract methods. Invariant checked by
    the tests: ``emb == feats[-1].mean((2, 3))`` and ``logits == classifier(emb)``.
    """

    stage_channels: Sequence[int] = ()

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Stage feature maps.

        Args:
            x: images, (N, 3, H, W).

        Returns:
            list of (N, C_l, H_l, W_l), one per stage, shallow to deep; ``C_l`` equals
            ``self.stage_channels[l]``.
        """
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """Module mapping embeddings (M, D) to logits (M, num_classes).

        MSD uses it to label the local (pooled) teacher features.
        """
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        """D, the width of the penultimate embedding (= channels of the last stage)."""
        return int(self.stage_channels[-1])

    def forward(
        self, x: torch.Tensor, with_features: bool = False
    ) -> Union[torch.Tensor, Dict[str, object]]:
        """Run the network.

        Args:
            x: images, (N, 3, H, W).
            with_features: also return the embedding and the stage maps.

        Returns:
            logits (N, num_classes) when ``with_features`` is False, otherwise a dict
            ``{"logits": (N, num_classes), "emb": (N, D), "feats": [(N, C_l, H_l, W_l)]}``.
        """
        feats = self.forward_stages(x)
        emb = torch.flatten(nn.functional.adaptive_avg_pool2d(feats[-1], 1), 1)
        logits = self.get_classifier()(emb)
        if not with_features:
            return logits
        return {"logits": logits, "emb": emb, "feats": feats}
