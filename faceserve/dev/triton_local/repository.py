"""The CPU variant of the canonical model repository, generated, never hand-maintained.

Each canonical `<model>/config.pbtxt` (onnxruntime backend) becomes a Python-backend
config with the same name, inputs, outputs, max_batch_size, dynamic_batching and version_policy, a
KIND_CPU instance, and an `onnx_model_dir` parameter naming the canonical model folder by absolute
path; every built version `<n>/` holds the one shim of this package as its `model.py`, which runs
`<onnx_model_dir>/<n>/model.onnx`. Triton loads the versions the policy names (the serving one), and
the others when told to through its repository API (`faceserve.backends.triton_control`).

With `python_models`, faceserve's own Python models of the canonical repository (pipeline, rotate:
`faceserve.triton_models`) are served too, their configs kept as they are but for where they find
this checkout and the canonical repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from faceserve.models.repository import (CONFIG_FILE, LABELS_FILE, PYTHON_MODEL_FILE, model_dirs, python_model_dirs,
                                         read_config, versions, write_config, write_python_model_folder)
from faceserve.settings import PROJECT_ROOT
from faceserve.triton_models import configs as triton_models

SHIM = Path(__file__).with_name("python_model.py")  # runs a canonical ONNX model with onnxruntime


def cpu_config(canonical: mc.ModelConfig, model_dir: Path, *, dynamic_batching: bool = True,
               ort_threads: int = 1) -> mc.ModelConfig:
    """The canonical config served by the Python backend; only batching may be switched off."""
    config = mc.ModelConfig()
    config.CopyFrom(canonical)
    config.ClearField("platform")
    config.ClearField("default_model_filename")
    # the serving version's labels lie beside the config (Triton reads one label file per model)
    for output in config.output:
        if output.label_filename:
            output.label_filename = LABELS_FILE
    config.backend = "python"
    config.ClearField("instance_group")
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    if not dynamic_batching:
        config.ClearField("dynamic_batching")
    config.parameters["onnx_model_dir"].string_value = str(model_dir.resolve())
    config.parameters["ort_threads"].string_value = str(ort_threads)
    return config


def local_python_config(canonical_config: mc.ModelConfig, canonical: Path) -> mc.ModelConfig:
    """A faceserve Python model's config as this checkout serves it."""
    config = mc.ModelConfig()
    config.CopyFrom(canonical_config)
    config.parameters["faceserve_root"].string_value = str(PROJECT_ROOT)
    config.parameters["model_repository"].string_value = str(canonical.resolve())
    return config


def build_cpu_repository(canonical: Path, out: Path, *, dynamic_batching: bool = True,
                         models: list[str] | None = None, ort_threads: int = 1,
                         python_models: bool = False) -> list[str]:
    """Write the CPU repository for `models` (default: every built model, and with `python_models` faceserve's
    Python models) to `out`; return the names."""
    dirs = {d.name: d for d in model_dirs(canonical)}
    code = {d.name: d for d in python_model_dirs(canonical)} if python_models else {}
    names = sorted(dirs) if models is None else list(models)
    unknown = [n for n in names if n not in dirs]
    if unknown:
        raise ValueError(f"{canonical} has no built model {', '.join(unknown)} (built: {', '.join(sorted(dirs))})")
    if not names:
        raise ValueError(f"{canonical} has no built model; run `python -m convert build`")
    if out.exists():
        shutil.rmtree(out)
    for name, source in code.items():
        write_python_model_folder(out / name, local_python_config(read_config(source / CONFIG_FILE), canonical),
                                  triton_models.SHIM)
    for name in names:
        source = dirs[name]
        canonical_config = read_config(source / CONFIG_FILE)
        config = cpu_config(canonical_config, source, dynamic_batching=dynamic_batching, ort_threads=ort_threads)
        write_config(config, out / name / CONFIG_FILE)
        for version in versions(source):
            (out / name / str(version)).mkdir()
            shutil.copyfile(SHIM, out / name / str(version) / PYTHON_MODEL_FILE)
        labels = source / (canonical_config.output[0].label_filename or LABELS_FILE)
        if labels.exists():
            shutil.copyfile(labels, out / name / LABELS_FILE)
    return names + sorted(code)
