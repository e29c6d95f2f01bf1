"""The harness's data: formats of a data directory, their readers, subsets, held-out splits and batches."""
from .loading import (DEFAULT_DATA_DIR, FORMATS, IDX_INFO, MEAN, NUM_CLASSES, POOL_IMAGES, SPLIT_FILES, STD,  # noqa: F401
                      DataInfo, DataSpec, Split, add_data_arguments, as_spec, channel_stats, detect_format,
                      epoch_batches, load_data, load_full, load_run_data, load_split, read_dataset, resolve_data_dir,
                      spec_from_args, subset, to_input)
