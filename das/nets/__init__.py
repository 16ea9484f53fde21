"""Network code shared by teachers, search spaces, proxies and pruning, below all of them.

- :mod:`das.nets.cifar_resnet`: the CIFAR ResNets of He et al. (teachers and the ``resnet_cifar`` space);
- :mod:`das.nets.tracing` and :mod:`das.nets.graph_stages`: feature points of foreign models found
  by a dry forward pass or from a traced graph (timm and torchvision teachers, the ``timm`` space);
- :mod:`das.nets.timm_points`: a timm model's feature points;
- :mod:`das.nets.weights`: the conv and linear weights that proxies score and masks cover;
- :mod:`das.nets.masks`: pruning masks as parametrizations (prune.py applies them, a distilled
  student's checkpoint carries them).
"""
