"""Whether a network runs on the images it will be given: one check, one message, for search.py and train.py alike.

A network too deep for small images fails inside a pooling or convolution layer with a size
error; run on a couple of zero images first, that becomes one line naming the network, the image
size and the flag that changes it, before any data is read or any epoch trains.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from das.errors import DasError


def check_runs_on(model: nn.Module, what: str, x: torch.Tensor) -> Any:
    """``model``'s output on the images ``x`` (eval mode, no gradients; its mode is restored after).

    Raises:
        DasError: one line naming ``what`` and the image size when ``model`` cannot run on ``x``.
    """
    was_training = model.training
    model.eval()  # BatchNorm of a 1×1 map on 2 images is not the question
    try:
        with torch.no_grad():
            return model(x)
    except (RuntimeError, ValueError) as err:
        shape = "×".join(str(s) for s in x.shape[1:])
        why = " ".join(str(err).split())[:160]
        raise DasError(f"{what} cannot run on the {shape} images ({why}); raise data.image_size or leave it null for the "
                       "dataset's own size") from None
    finally:
        model.train(was_training)
