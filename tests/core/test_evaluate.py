import torch
from torch import nn

from das.evaluate import top1_accuracy


class Fixed(nn.Module):
    """Predicts class 0 for every image; has one BN so its mode is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2) + 0 * self.bn(x.flatten(1)[:, :2]).sum()


def test_counts_hits_over_all_batches_and_restores_mode() -> None:
    model = Fixed().train()
    batches = [(torch.zeros(3, 2), torch.tensor([0, 0, 1])), (torch.zeros(1, 2), torch.tensor([1]))]
    assert top1_accuracy(model, batches) == 50.0
    assert model.training
