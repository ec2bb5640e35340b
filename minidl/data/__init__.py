"""Datasets in their official formats, batched transforms, splits, statistics and the DataLoader.

    from minidl.data import DataLoader, datasets, transforms as T
    train = datasets.CIFAR10(train=True, transform=T.Compose([T.RandomCrop(32, padding=4),
                                                             T.RandomHorizontalFlip(), T.Normalize(mean, std)]))
    for x, y in DataLoader(train, batch_size=128, shuffle=True, seed=0, device="cuda"): ...
"""
from minidl.data import datasets, transforms
from minidl.data.cifar import CIFAR10, CIFAR100
from minidl.data.dataset import ArrayDataset, Dataset, Subset
from minidl.data.download import (DatasetFormatError, DatasetNotFoundError, DownloadError, check_integrity,
                                  default_root, download_url, extract_archive, md5sum)
from minidl.data.loader import DataLoader
from minidl.data.mnist import MNIST, FashionMNIST, read_idx
from minidl.data.sampler import (BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler,
                                 SubsetRandomSampler, WeightedRandomSampler)
from minidl.data.splits import first_last_split, random_split
from minidl.data.stats import mean_std

__all__ = ["datasets", "transforms", "DataLoader", "Dataset", "ArrayDataset", "Subset", "MNIST", "FashionMNIST",
           "CIFAR10", "CIFAR100", "read_idx", "first_last_split", "random_split", "mean_std", "Sampler",
           "SequentialSampler", "RandomSampler", "DistributedSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler",
           "default_root", "download_url", "extract_archive", "check_integrity", "md5sum", "DatasetFormatError",
           "DatasetNotFoundError", "DownloadError"]
