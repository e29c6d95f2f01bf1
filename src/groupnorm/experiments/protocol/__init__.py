"""What a run is (RunConfig), the presets, and the plan of each experiment."""
from .config import (EXPERIMENTS, PRESET_NAMES, PRESETS, PROTOCOL, Preset, RunConfig, canonical_norm,  # noqa: F401
                     experiment_configs, get_preset, norm_kind, preset_data_dir, run_label, variant_label)
