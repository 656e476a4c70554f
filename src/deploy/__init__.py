"""Deployment: exporting a model, running the written file through its runtime, and classifying images with it.

The runtimes (:mod:`src.deploy.runtime`) are registered here, in this order (the first runtime of a suffix opens
it): adding one is a module with a :class:`~src.deploy.runtime.Runtime` subclass and one entry below.
"""
from .cell import CellRuntime
from .export import DEFAULT_TOLERANCE, ExportError, ExportResult, VerificationError, export_formats, export_model
from .meta import PREPROCESS_KEY, ExportedMeta, Preprocess
from .mindir import AirRuntime, MindIRRuntime
from .onnx_runtime import OnnxRuntime
from .runtime import Predictor, Runtime, check_config_model, get_runtime, list_runtimes, register_runtime, runtime_for

for _runtime in (CellRuntime(), MindIRRuntime(), AirRuntime(), OnnxRuntime()):
    register_runtime(_runtime)

__all__ = ["DEFAULT_TOLERANCE", "ExportError", "ExportResult", "VerificationError", "export_formats", "export_model",
           "PREPROCESS_KEY", "ExportedMeta", "Preprocess", "Predictor", "Runtime", "check_config_model", "get_runtime",
           "list_runtimes", "register_runtime", "runtime_for"]
