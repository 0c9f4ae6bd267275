"""faceserve's own models inside Triton (Python backend): `pipeline`, the whole analysis of one encoded photo
per call, and `rotate`. Any KServe v2 client (gRPC or HTTP, any language) calls them like any other model.

- `model.py`: the one Python-backend file, copied as `<model>/1/model.py`; it puts the checkout on
  `sys.path` (the `faceserve_root` parameter) and hands the model to `serving.py`.
- `serving.py`: what each model does with its requests. The pipeline model runs `faceserve.pipeline.Pipeline`
  itself over `faceserve.backends.bls.BlsBackend`: the detector, landmark and head models are called through
  BLS, so their dynamic batchers merge the crops of concurrent pipeline requests.
- `configs.py`: their `config.pbtxt` (inputs, outputs per head, batching), written with `model_config_pb2`
  like every other config; `python -m faceserve.triton_models write` writes them into a repository.
- `client.py`: calling the pipeline model from Python (the CLI's `--server`, tests, benchmarks).

Not here: the local CPU server (`faceserve.dev.triton_local`), the stages themselves (`faceserve.pipeline`).
"""
