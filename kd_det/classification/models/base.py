"""The one interface every classification model exposes to the distiller.

A model implements :meth:`ClsNet.forward_taps` (or only :meth:`ClsNet.forward_stages`) and
:meth:`ClsNet.get_classifier` (the module mapping the embedding to logits). Everything the
losses need is then derived in one place, :meth:`ClsNet.forward`, so no loss method needs
model-specific code. Three lists of maps, shallow to deep:

* ``feats`` (``stage_channels``): the stage maps; the last one is globally average-pooled
  into the penultimate embedding.
* ``stage_feats`` (``stage_feat_channels``): the stage maps as the CRD model code returns
  them (``is_feat=True``; mdistiller's ``feats["feats"][1:]``), the maps ReviewKD's code
  distils. They equal ``feats`` except where the CRD code taps a different map: WideResNet
  (the last block's output, before the final BN-ReLU), MobileNetV2 (the output of its last
  inverted-residual group, 320 x 0.5 = 160 channels, not the 1x1 ``conv2``) and
  ShuffleNetV2 (``layer3``, 464 channels, not the 1x1 ``conv2``).
* ``preact_feats`` (same channels as ``stage_feats``): the same maps before their final
  activation (CRD's ``preact=True``; mdistiller's ``feats["preact_feats"][1:]``); a map
  that no activation ends (e.g. an inverted-residual output) is its own pre-activation.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["ClsNet", "run_stage", "run_stages"]


class ClsNet(nn.Module):
    """Base class (or mixin, first in the MRO) of every model of the zoo.

    Subclasses set ``self.stage_channels`` (channels of each map returned by
    :meth:`forward_stages`) and implement the two abstract methods. Invariant checked by
    the tests: ``emb == feats[-1].mean((2, 3))`` and ``logits == classifier(emb)``.
    """

    stage_channels: Sequence[int] = ()

    @property
    def stage_feat_channels(self) -> Sequence[int]:
        """Channels of ``stage_feats`` / ``preact_feats`` (= ``stage_channels`` unless a model
        sets ``_stage_feat_channels``)."""
        return tuple(getattr(self, "_stage_feat_channels", None) or self.stage_channels)

    def forward_stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Stage feature maps.

        Args:
            x: images, (N, 3, H, W).

        Returns:
            list of (N, C_l, H_l, W_l), one per stage, shallow to deep; ``C_l`` equals
            ``self.stage_channels[l]``.
        """
        if type(self).forward_taps is ClsNet.forward_taps:
            raise NotImplementedError(f"{type(self).__name__} implements neither forward_stages nor forward_taps.")
        return self.forward_taps(x)["feats"]

    def forward_taps(self, x: torch.Tensor, preact: bool = False) -> Dict[str, Optional[List[torch.Tensor]]]:
        """``{"feats", "stage_feats", "preact_feats"}`` (see the module docstring).

        Args:
            x: images, (N, 3, H, W).
            preact: also return ``preact_feats`` (kept only when asked: holding them costs
                memory in training).

        Returns:
            the three lists; ``preact_feats`` is None when not asked for or when the model
            has none (the default, for models that only implement ``forward_stages``).
        """
        feats = self.forward_stages(x)
        return {"feats": feats, "stage_feats": feats, "preact_feats": None}

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
        self, x: torch.Tensor, with_features: bool = False, preact: bool = False
    ) -> Union[torch.Tensor, Dict[str, object]]:
        """Run the network.

        Args:
            x: images, (N, 3, H, W).
            with_features: also return the embedding and the stage maps.
            preact: also return ``preact_feats`` (with ``with_features``).

        Returns:
            logits (N, num_classes) when ``with_features`` is False, otherwise a dict
            ``{"logits": (N, num_classes), "emb": (N, D), "feats": [(N, C_l, H_l, W_l)],
            "stage_feats": [...], "preact_feats": [...] or None}``.

        Raises:
            ValueError: ``preact`` is asked of a model that has no pre-activation maps.
        """
        if not with_features:
            feats = self.forward_stages(x)
            taps = None
        else:
            taps = self.forward_taps(x, preact=preact)
            feats = taps["feats"]
            if preact and taps["preact_feats"] is None:
                raise ValueError(f"{type(self).__name__} provides no pre-activation feature maps "
                                 "(preact_feats).")
        emb = torch.flatten(nn.functional.adaptive_avg_pool2d(feats[-1], 1), 1)
        logits = self.get_classifier()(emb)
        if not with_features:
            return logits
        return {"logits": logits, "emb": emb, **taps}


def run_stage(layer: nn.Sequential, x: torch.Tensor, preact: bool, last_block=None):
    """Run a stage of blocks; with ``preact``, also the last block's pre-activation output.

    Args:
        layer: the blocks of the stage.
        x: the stage input.
        preact: return the pre-activation map of the last block too.
        last_block: callable ``(block, x) -> (out, pre)`` for the last block; default
            ``block.forward_preact``.

    Returns:
        (output, pre-activation output or None).
    """
    if not preact:
        return layer(x), None
    for block in layer[:-1]:
        x = block(x)
    last = layer[-1]
    return last_block(last, x) if last_block is not None else last.forward_preact(x)


def run_stages(layers, x: torch.Tensor, preact: bool, last_block=None):
    """:func:`run_stage` over consecutive stages.

    Returns:
        (list of stage outputs, list of their pre-activation outputs or None without ``preact``).
    """
    feats, pres = [], []
    for layer in layers:
        x, pre = run_stage(layer, x, preact, last_block)
        feats.append(x)
        pres.append(pre)
    return feats, (pres if preact else None)

