"""Data for das: image datasets in memory or streamed, the Lightning data module and the probe batches.

Small datasets are held in memory as ``uint8`` tensors (see ``das.data.splits``), which keeps
splits exact and probe batches cheap and reproducible. Large ones are streamed: an image folder
(``das.data.streamed``) or WebDataset shards (``das.data.shards``), indexed once and decoded in
DataLoader workers. Add a dataset by registering a loader in :data:`DATASETS` (see
``das.data.datasets``).
"""

from das.data.datamodule import DasDataModule
from das.data.datasets import DATASETS, load_dataset
from das.data.probe import probe_batches
from das.data.splits import DatasetSplits, ImageDataset, ImageSplit, stratified_split
from das.data.transforms import AUGMENTATIONS, eval_transform, train_transform

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DasDataModule",
    "DatasetSplits",
    "ImageDataset",
    "ImageSplit",
    "eval_transform",
    "load_dataset",
    "probe_batches",
    "stratified_split",
    "train_transform",
]
