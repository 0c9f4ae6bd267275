"""The Python-backend file of faceserve's own Triton models, copied as `<model>/1/model.py`.

Runs in Triton's Python-backend stub: it puts the checkout named by the `faceserve_root` parameter on
`sys.path` and hands the model named by `faceserve_model` to `faceserve.triton_models.serving`, where
everything else is.
"""

import json
import sys

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        if parameters.get("faceserve_root"):
            sys.path.insert(0, parameters["faceserve_root"])
        from faceserve.triton_models import serving

        self.model = serving.create(pb_utils, parameters, args["model_repository"])

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model.close()
