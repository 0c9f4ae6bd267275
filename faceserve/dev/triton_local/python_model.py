"""The Python-backend model the local Triton server runs for every canonical model.

Copied as `<model>/<n>/model.py` for each version n into the generated CPU repository. It
loads the SAME `<n>/model.onnx` as the canonical repository (the canonical model folder by
absolute path in the `onnx_model_dir` config parameter) with onnxruntime, and serves each `execute` call in one run: the inputs of
all requests Triton's dynamic batcher grouped are concatenated, run once and split back.

Runs inside the Triton server's own environment (numpy < 2, see
requirements/triton-local.txt), never in the service's.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("ort_threads", "1"))
        options.inter_op_num_threads = 1
        onnx_model = os.path.join(params["onnx_model_dir"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        (model_input,) = config["input"]
        self.input_name = model_input["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            outputs = self.session.run(self.output_names, {self.input_name: batch.astype(np.float32, copy=False)})
        except Exception as exc:  # every request of this execution gets the error
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for array in arrays:
            stop = start + len(array)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop], dtype=np.float32))
                for name, out in zip(self.output_names, outputs)]))
            start = stop
        return responses
