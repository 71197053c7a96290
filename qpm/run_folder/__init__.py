"""The run folder's one owner: what it holds and under which names (variants included), its
config.json (TrainConfig, filled in from a recipe), its lock, its stage records and its data
fingerprint; and reading it back. Nothing else names a run-folder file.

Import it as ``from qpm import run_folder as rf``; it does not import torch.
"""

from qpm.run_folder.calibration import calibration_paths, read_calibration, write_calibration
from qpm.run_folder.fingerprint import (
    check_data,
    data_fingerprint,
    describe_data_change,
    fingerprint_hash,
)
from qpm.run_folder.lock import RunLock, claim, holding_lock, remove_stale_temporaries
from qpm.run_folder.names import (
    ASSIGNMENT,
    CONFIG,
    DATA,
    DENSE,
    EXPLAIN,
    FEATURES,
    LOCK,
    METRICS,
    RECORDS,
    SIMILARITIES,
    SLDD_LAYER,
    TOKENS,
    TOKENS_MANIFEST,
    VARIANTS,
    calibration_files,
    checkpoint_file,
    model_file,
    plot_file,
    token_file,
)
from qpm.run_folder.ownership import artifact_owner, check_files, check_run_dir, is_run_folder
from qpm.run_folder.reading import (
    Model,
    RunFolder,
    class_names,
    finished_models,
    open_run,
    read_arrays,
    read_config,
)
from qpm.run_folder.records import (
    StageRecord,
    artifact_mismatch,
    check_model_file,
    file_hash,
    imported_from,
    read_record,
    record_path,
    write_record,
)
from qpm.run_folder.variants import relative_dir, variant_dir, variant_name

__all__ = [
    "ASSIGNMENT", "CONFIG", "DATA", "DENSE", "EXPLAIN", "FEATURES", "LOCK", "METRICS", "RECORDS",
    "SIMILARITIES", "SLDD_LAYER", "TOKENS", "TOKENS_MANIFEST", "VARIANTS", "Model", "RunFolder",
    "RunLock", "StageRecord",
    "artifact_mismatch", "artifact_owner", "calibration_files", "calibration_paths",
    "check_data", "check_files", "check_model_file", "check_run_dir", "checkpoint_file",
    "claim", "class_names", "is_run_folder",
    "data_fingerprint", "describe_data_change", "file_hash", "fingerprint_hash",
    "finished_models", "holding_lock", "imported_from", "model_file", "open_run", "plot_file",
    "read_arrays", "read_calibration", "read_config", "read_record", "record_path",
    "relative_dir",
    "remove_stale_temporaries", "token_file",
    "variant_dir", "variant_name", "write_calibration", "write_record",
]
