"""Data: CIFAR-10/100 from the official binary files, normalisation, augmentation, batches."""
from npse.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    CIFAR10_URL,
    CIFAR100_MD5,
    CIFAR100_URL,
    Dataset,
    DownloadError,
    download_and_extract,
    load_cifar10,
    load_cifar100,
    md5_of,
    read_cifar10_file,
    read_cifar100_file,
    resolve_data_dir,
    safe_extract,
)
from npse.data.loader import epoch_rng, iterate_batches, num_batches, subset
from npse.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    channel_stats,
    draw_augmentation,
    normalize,
    random_crop_flip,
)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10_URL", "CIFAR100_MD5", "CIFAR100_URL",
    "CIFAR10_MEAN", "CIFAR10_STD", "Dataset", "DownloadError", "channel_stats",
    "download_and_extract", "draw_augmentation", "epoch_rng", "iterate_batches", "load_cifar10",
    "load_cifar100", "md5_of", "normalize", "num_batches", "random_crop_flip",
    "read_cifar10_file", "read_cifar100_file", "resolve_data_dir", "safe_extract", "subset",
]
