"""Export the lean inference path (``model(x)`` -> logits) through a runtime (:mod:`src.deploy.runtime`) and
verify it by running the written file on a random batch against the Cell.

What every format shares is here: the target check (before minutes of work), the Cell's reference logits, the
temporary name in the target folder, the check (max abs logit difference <= ``tolerance``; a file that fails it
is removed) and the rename into place. What a format writes, and how it is loaded back for the check, is its
runtime's: MINDIR (:mod:`src.deploy.mindir`, everywhere), AIR (Ascend only, cannot be loaded back, so it is
reported as not verified), ONNX (:mod:`src.deploy.onnx_runtime`, needs the optional packages onnx and
onnxruntime) and CKPT (:mod:`src.deploy.cell`, the weights with their class names). Exported graphs store the data
settings and the class names (``data_info``) under :data:`src.deploy.meta.PREPROCESS_KEY`.
"""
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor, nn

from .runtime import Runtime, get_runtime, list_runtimes

__all__ = ["DEFAULT_TOLERANCE", "ExportError", "VerificationError", "ExportResult", "export_formats", "output_path",
           "check_format_device", "export_model"]

DEFAULT_TOLERANCE = 1e-4


class ExportError(ValueError):
    """An export that cannot be done here (format, device, missing optional package, exporter limit)."""


class VerificationError(ExportError):
    """The written file does not compute what the Cell computes; the file has been removed."""


@dataclass(frozen=True)
class ExportResult:
    """Where the file went and how it was checked (``max_abs_diff`` is None when it could not be)."""
    path: Path
    size_bytes: int
    input_shape: tuple[int, ...]
    max_abs_diff: float | None
    tolerance: float
    note: str = ""

    def summary(self) -> str:
        size = f"{self.size_bytes / 2 ** 20:.2f} MiB"
        if self.max_abs_diff is None:
            check = f"NOT verified ({self.note})"
        else:
            check = f"verified: max |logits - Cell logits| = {self.max_abs_diff:.3g} <= {self.tolerance:g}"
            if self.note:
                check += f" ({self.note})"
        return f"wrote {self.path} ({size}, input {list(self.input_shape)} float32); {check}"


def export_formats() -> dict[str, str]:
    """``{file_format: suffix}`` of the registered runtimes (export.py's ``--file_format`` choices)."""
    return {runtime.file_format: runtime.suffix for runtime in list_runtimes()}


def output_path(file_name: str | os.PathLike, file_format: str) -> Path:
    """``file_name`` with the format's extension (added unless already there, as ``mindspore.export`` does)."""
    suffix = _runtime(file_format).suffix
    path = Path(file_name)
    return path if path.name.endswith(suffix) else path.with_name(path.name + suffix)


def check_format_device(file_format: str, device_target: str) -> None:
    """Fail before any work when the format cannot be exported on ``device_target``."""
    _runtime(file_format).check_available(device_target)


def export_model(model: nn.Cell, file_name: str | os.PathLike, file_format: str = "MINDIR",
                 batch_size: int = 1, *, data_info: Mapping[str, Any] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, **options: Any) -> ExportResult:
    """Export ``model(x)`` for a static input ``[batch_size, in_chans, img_size, img_size]`` float32 and check it.

    Args:
        model: a :class:`~src.models.VisionTransformer` (weights loaded); it is put in inference mode.
        file_name: output path, with or without the format's extension.
        file_format: a registered runtime's format (:func:`export_formats`: MINDIR, AIR, ONNX, CKPT).
        batch_size: the fixed batch size of the exported graph.
        data_info: JSON-serialisable preprocessing settings and class names
            (:meth:`src.deploy.meta.Preprocess.to_dict`) stored in the file (read back by the runtime's
            ``read_meta``).
        tolerance: largest accepted max abs difference between the file's and the Cell's logits.
        seed: seed of the random check batch.
        options: the runtime's own export options, e.g. ONNX's ``onnx_rewrite=False`` (keep MindSpore's graph).

    Raises:
        ExportError: the format cannot be exported here, or nothing can be written at the target (checked first).
        VerificationError: the check failed (file removed).
    """
    runtime = _runtime(file_format)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    runtime.check_available()
    target = output_path(file_name, runtime.file_format)
    _check_target(target)  # before the minutes of compiling, exporting and verifying

    model.set_train(False)
    shape = (batch_size, model.in_chans, model.img_size, model.img_size)
    batch = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    # The Cell's logits before any export-only rewrite: the file is compared with what the model computes.
    expected = model(Tensor(batch)).asnumpy()

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{runtime.suffix}"
    try:
        note = runtime.export(model, tmp, batch, data_info, **options)
        if not tmp.is_file():
            raise ExportError(f"the {runtime.label} exporter did not write {tmp} (large models may be split into "
                              f"several files, which this exporter does not handle)")
        diff = _verify(runtime, tmp, model, batch, expected, tolerance, target)
        try:
            os.replace(tmp, target)
        except OSError as e:  # the target changed since _check_target (e.g. a folder appeared)
            raise ExportError(f"{target}: cannot write the file ({e.strerror})") from e
    finally:
        for leftover in target.parent.glob(tmp.name.removesuffix(runtime.suffix) + "*"):
            leftover.unlink()
    return ExportResult(target, target.stat().st_size, shape, diff, tolerance, note)


# --------------------------------------------------------------------------------------------- internals

def _runtime(file_format: str) -> Runtime:
    formats = export_formats()
    if str(file_format).upper() not in formats:
        raise ExportError(f"file_format: expected one of {', '.join(formats)}, got {file_format!r}")
    return get_runtime(file_format)


def _verify(runtime: Runtime, tmp: Path, model: nn.Cell, batch: np.ndarray, expected: np.ndarray,
            tolerance: float, target: Path) -> float | None:
    """Max abs difference of the written file's logits from ``expected`` (None when the runtime cannot load what
    it writes); a file that cannot be run or disagrees is a :class:`VerificationError`."""
    try:
        got = runtime.run_written(tmp, model, batch)
    except ValueError as e:  # the runtime cannot load or run the written file
        raise VerificationError(f"{target}: the written {runtime.label} file cannot be run: {e}; "
                                f"file removed") from None
    if got is None:
        return None
    diff = _max_abs_diff(expected, got)
    if not diff <= tolerance:  # also catches NaN
        raise VerificationError(f"{target}: the exported {runtime.label} file disagrees with the model: max abs "
                                f"logit difference {diff:.3g} > {tolerance:g}; file removed")
    return diff


def _check_target(target: Path) -> None:
    """The exported file can be put at ``target``: its folder exists and takes new files, and no folder has
    the file's name. Checked by creating (and removing) a file there: permission bits alone miss read-only
    mounts and do not apply to root."""
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: output folder {target.parent} does not exist")
    if target.is_dir():
        raise ExportError(f"{target}: a folder of that name exists; choose another file name")
    try:
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.probe-")
    except OSError as e:
        raise ExportError(f"{target}: cannot write in folder {target.parent} ({e.strerror})") from None
    os.close(fd)
    os.remove(probe)


def _max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    if np.shape(got) != expected.shape:
        return float("inf")
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - expected)))
