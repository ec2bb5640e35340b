"""The datasets, in one namespace: ``from minidl.data import datasets; datasets.CIFAR10(...)``."""
from minidl.data.cifar import CIFAR10, CIFAR100
from minidl.data.dataset import ArrayDataset, Dataset, Subset
from minidl.data.download import DatasetFormatError, DatasetNotFoundError, default_root
from minidl.data.mnist import MNIST, FashionMNIST, read_idx

__all__ = ["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "ArrayDataset", "Dataset", "Subset",
           "DatasetFormatError", "DatasetNotFoundError", "default_root", "read_idx"]
