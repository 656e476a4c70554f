"""Data pipeline: ImageNet-layout folders -> ``mindspore.dataset`` batches, and the built-in demo dataset.

Entry points: :func:`create_dataset` (eval and training pipelines), :func:`resolve_data_root` (``"demo"`` or
a folder), :func:`ensure_demo_dataset`, :func:`scan_image_folder`, :func:`check_num_classes`.
"""
from .dataset import EVAL_COLUMNS, TRAIN_COLUMNS, DatasetInfo, create_dataset, shard_order
from .demo import DEMO_CLASSES, DEMO_ENV_VAR, default_demo_root, ensure_demo_dataset, resolve_data_root
from .folder import FolderScan, check_num_classes, class_folders, collect_images, load_rgb, scan_image_folder
from .interpolation import INTERPOLATIONS
from .transforms import check_aug

__all__ = [
    "create_dataset", "shard_order", "DatasetInfo", "EVAL_COLUMNS", "TRAIN_COLUMNS",
    "ensure_demo_dataset", "resolve_data_root", "default_demo_root", "DEMO_CLASSES", "DEMO_ENV_VAR",
    "scan_image_folder", "class_folders", "FolderScan", "check_num_classes", "load_rgb", "collect_images",
    "INTERPOLATIONS", "check_aug",
]
