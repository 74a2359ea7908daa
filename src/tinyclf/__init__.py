"""tinyclf: a reproducible DVC pipeline for ResNet-50-class image classifiers on Tiny ImageNet and CIFAR-10."""

__version__ = "0.1.0"
