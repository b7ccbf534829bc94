"""Symmetric image-caption contrastive loss: MARVEL's plugin pretraining (``pretrain/train.py``), CLIP's objective.

For a batch of B pictures with their captions, s(i, c) = logit_scale * <image_i, caption_c>, the loss is the mean of
the two cross-entropies, pictures over captions and captions over pictures:

    L = ( CE(s, arange(B)) + CE(s^T, arange(B)) ) / 2

A caption shared by several pictures of the batch (all pictures of an entity share one caption in mini-WebQA) is
not a negative of those pictures, nor they of it: such pairs are masked, as a retrieval positive is never a
negative. Pictures that could not be decoded (``image_valid`` False) take no part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.loss import ContrastiveLossOutput, _at_least_fp32, _mean_logsumexp
from retrieval.errors import InputError


class ImageCaptionContrastiveLoss(nn.Module):
    """Pictures against their captions, both ways; trains on image-caption pairs (``data.train_task``)."""

    #: The training batches this loss needs (the CLI links it to ``data.train_task``).
    train_task = "image_caption"

    def check_has_negatives(
        self, batch_size: int, world_size: int, hard_per_query: int, mines_at_start: bool, negatives: str = ""
    ) -> None:
        """InputError when a batch holds a single pair (no negative)."""
        if batch_size < 2:
            raise InputError(
                f"image-caption pretraining needs at least 2 pairs a batch, got {batch_size}; raise data.batch_size"
            )

    def forward(
        self, images: Tensor, captions: Tensor, caption_groups: Tensor, image_valid: Tensor, logit_scale: Tensor
    ) -> ContrastiveLossOutput:
        """Loss of one batch of pairs.

        Args:
            images: [B, D] L2-normalised picture embeddings.
            captions: [B, D] L2-normalised caption embeddings, row b the caption of picture b.
            caption_groups: [B] long, equal for pairs whose captions are the same text.
            image_valid: [B] bool, False for an undecodable picture (its pair is left out).
            logit_scale: scalar 1 / tau.
        """
        with torch.autocast(device_type=images.device.type, enabled=False):
            images, captions, logit_scale = (_at_least_fp32(x) for x in (images, captions, logit_scale))
            images, captions, groups = images[image_valid], captions[image_valid], caption_groups[image_valid]
            n = images.shape[0]
            target = torch.arange(n, device=images.device)
            same_caption = groups.unsqueeze(0) == groups.unsqueeze(1)
            negatives = ~same_caption  # the diagonal (the pair itself) is the target, other shared captions masked
            masked = same_caption & ~torch.eye(n, dtype=torch.bool, device=images.device)
            logits = (logit_scale * images @ captions.T).masked_fill(masked, float("-inf"))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        scores = logits.detach()
        return ContrastiveLossOutput(
            loss=loss,
            alignment=-scores.diagonal().mean(),
            image_negatives=_mean_logsumexp(scores, negatives),  # pictures over other captions
            text_negatives=_mean_logsumexp(scores.T, negatives),  # captions over other pictures
            candidates_per_query=negatives.sum(dim=1).float().mean(),
            scores=scores,
            target=target,
            target_is_image=torch.ones(n, dtype=torch.bool, device=images.device),
        )
