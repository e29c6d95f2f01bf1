"""The harness's data: the formats of a data directory, their readers, subsets, held-out splits and batches.

- :mod:`.formats`: the formats in one map (detect, read, what the directory holds); a new format is one entry
  there plus its reader module;
- readers: :mod:`.idx` (MNIST-format IDX files), :mod:`.cifar` (CIFAR-10/100 pickles), :mod:`.imagefolder`
  (``train/<class>/``, ``val/<class>/`` images decoded with Pillow);
- :mod:`.split` (:class:`DataInfo`, the in-memory :class:`Split` and its batches), :mod:`.spec` (``--data-dir``
  and friends, without torch), :mod:`.loading` (cached subsets and each epoch's batches), :mod:`.holdout`
  (held-out training images for the lr sweep), :mod:`.noniid` (workers' batches from a few classes),
  :mod:`.clips` (moving-item clips, the video task), :mod:`.run_data` (a run's splits by its task).
"""
from .cifar import channel_stats, load_cifar
from .formats import FORMATS, DataFormat, detect_format
from .idx import SPLIT_FILES, load_split, read_idx, write_idx
from .loading import POOL_IMAGES, epoch_batches, load_data, load_full, read_dataset, subset
from .spec import DATASET_CHOICES, DEFAULT_DATA_DIR, DataSpec, add_data_arguments, as_spec, resolve_data_dir, \
    spec_from_args
from .split import IDX_INFO, MEAN, NUM_CLASSES, STD, DataInfo, Split, to_input
from .run_data import load_run_data

__all__ = ["FORMATS", "DataFormat", "detect_format", "read_dataset", "DataSpec", "DATASET_CHOICES",
           "DEFAULT_DATA_DIR", "add_data_arguments", "as_spec", "resolve_data_dir", "spec_from_args", "DataInfo",
           "Split", "IDX_INFO", "MEAN", "STD", "NUM_CLASSES", "to_input", "SPLIT_FILES", "read_idx", "write_idx",
           "load_split", "channel_stats", "load_cifar", "POOL_IMAGES", "load_full", "load_data", "load_run_data",
           "subset", "epoch_batches"]
