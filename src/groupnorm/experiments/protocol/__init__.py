"""What the harness trains: a run (:mod:`.run_config`), the presets (:mod:`.presets`) and each experiment's plan
(:mod:`.experiments`, one map)."""
from .experiments import EXPERIMENTS, PLAN_TASKS, PLANS, Plan, experiment_configs, plan_task, plan_tasks
from .presets import PRESET_NAMES, PRESETS, PROTOCOL, Preset, get_preset, preset_data_dir
from .run_config import DEFAULT_CONFIG, RunConfig, canonical_norm, norm_kind, run_label, variant_label

__all__ = ["EXPERIMENTS", "PLAN_TASKS", "plan_task", "plan_tasks", "PLANS", "Plan", "experiment_configs", "PRESET_NAMES",
           "PRESETS", "PROTOCOL", "Preset",
           "get_preset", "preset_data_dir", "DEFAULT_CONFIG", "RunConfig", "canonical_norm", "norm_kind",
           "run_label", "variant_label"]
