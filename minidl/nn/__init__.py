"""Layers, models, losses and initialisation, with PyTorch's names (``from minidl import nn``)."""
from minidl.nn import functional, init, parallel
from minidl.nn.activation import Flatten, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from minidl.nn.container import ModuleList, Sequential
from minidl.nn.conv import Conv2d
from minidl.nn.dropout import Dropout, Dropout2d
from minidl.nn.linear import Identity, Linear
from minidl.nn.loss import CrossEntropyLoss, MSELoss, NLLLoss
from minidl.nn.module import Module
from minidl.nn.normalization import BatchNorm1d, BatchNorm2d
from minidl.nn.parameter import Parameter
from minidl.nn.sync_batchnorm import SyncBatchNorm
from minidl.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from minidl.nn.resnet import BasicBlock, PadShortcut, ResNet, resnet18, resnet20, resnet32, resnet44, resnet56
from minidl.nn.model_summary import ModelSummary, summary

__all__ = ["functional", "init", "parallel", "Module", "Parameter", "Linear", "Identity", "Conv2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "Dropout", "Dropout2d", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm",
           "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Flatten", "Sequential", "ModuleList",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "BasicBlock", "PadShortcut", "ResNet", "resnet18", "resnet20",
           "resnet32", "resnet44", "resnet56", "summary", "ModelSummary"]
