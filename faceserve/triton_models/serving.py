"""What faceserve's Python-backend models do with the requests of one `execute` call.

Every request of the call is answered concurrently on the model's own event loop. A `FaceserveError`
(an undecodable image, a limit, an unknown detector) becomes that request's Triton error
`<code>: <message>` with the same words the HTTP service answers; any other exception is logged and
answered as `internal_error`: the stub never dies of an input.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from faceserve.backends.bls import BlsBackend
from faceserve.errors import FaceserveError, InvalidRequest
from faceserve.pipeline import imaging
from faceserve.pipeline.schemas import Analysis
from faceserve.services import ImageService, Services
from faceserve.services.images import digest
from faceserve.settings import Settings
from faceserve.store import new_id
from faceserve.triton_models import configs

log = logging.getLogger(__name__)

# Decoding, crops and BLS calls (`async_exec` runs in the loop's executor) all take a thread: enough for every
# request of a full batch to have its head calls in flight at once.
WORKER_THREADS = 4 * configs.MAX_BATCH_SIZE
# Whose the answers the pipeline model remembers are: Triton tells a model nothing of its client.
PIPELINE_OWNER = "triton:pipeline"


def triton_error(pb_utils, error: FaceserveError):
    """Triton's INVALID_ARG for the caller's mistakes (HTTP 4xx), UNAVAILABLE when a model cannot answer."""
    code = pb_utils.TritonError.UNAVAILABLE if error.status >= 500 else pb_utils.TritonError.INVALID_ARG
    return pb_utils.TritonError(f"{error.code}: {error.message}", code)


class Model(abc.ABC):
    def __init__(self, pb_utils):
        self.pb = pb_utils
        self.settings = Settings.from_env()  # the service's FACESERVE_* settings, from Triton's environment
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="faceserve"))

    @abc.abstractmethod
    async def answer(self, request) -> dict[str, np.ndarray]:
        """The output tensors of one request, each with its batch dimension of 1."""

    def execute(self, requests) -> list:
        return self.loop.run_until_complete(self._respond_all(requests))

    async def _respond_all(self, requests) -> list:
        return await asyncio.gather(*(self._respond(request) for request in requests))

    async def _respond(self, request):
        pb = self.pb
        try:
            outputs = await self.answer(request)
        except FaceserveError as error:
            return pb.InferenceResponse(output_tensors=[], error=triton_error(pb, error))
        except Exception as exc:  # noqa: BLE001 - one request's failure must not take the stub down
            log.exception("%s failed", type(self).__name__)
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(
                f"internal_error: {type(exc).__name__}: {exc}", pb.TritonError.INTERNAL))
        return pb.InferenceResponse(output_tensors=[pb.Tensor(name, value) for name, value in outputs.items()])

    def _scalar(self, request, name: str):
        """The one element of input `name` (None when an optional input is absent)."""
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return None
        array = tensor.as_numpy()
        if array.size != 1:
            raise InvalidRequest(f"send one value per request in `{name}` (shape [1, 1]), got shape "
                                 f"{list(array.shape)}", code="one_per_request")
        return array.reshape(-1)[0]

    def image_bytes(self, request) -> bytes:
        return bytes(self._scalar(request, configs.IMAGE.name))

    def text(self, request, name: str) -> str | None:
        value = self._scalar(request, name)
        if value is None:
            return None
        try:
            return value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidRequest(f"`{name}` must be UTF-8 text", code="invalid_request") from None

    def close(self) -> None:
        self.loop.close()


class PipelineModel(Model):
    """The service's `analysis` of the encoded photo, its models called through BLS; with `identify`, over the same
    store the service opens (FACESERVE_STORE), opened at the first such request. Its services are built as the
    service builds them (`Services.build`), on the BLS backend. Like each of the service's workers, it serves the
    face heads' versions the repository's configs name, looking every FACESERVE_MODELS_WATCH_S seconds, before an
    execution (between two, no request is in flight). While a trial runs, each request runs it as the service's
    `analyze` does (the candidate called through BLS, pinned to its version; a canary's drawn requests answered by
    it), and its answer and comparison rows are remembered in that store under the `request_id` output."""

    def __init__(self, pb_utils, repository: Path):
        super().__init__(pb_utils)
        self.services = Services.build(self.settings, backend=BlsBackend(pb_utils), repository=repository)
        self.pipeline = self.services.resources.pipeline
        self.loop.run_until_complete(self.services.resources.start())
        self.face_outputs = [output for head in self.pipeline.heads for output in configs.face_outputs(head.spec)]
        self._looked = time.monotonic()

    async def _respond_all(self, requests) -> list:
        every = self.settings.models_watch_s
        if every > 0 and time.monotonic() - self._looked >= every:
            self._looked = time.monotonic()
            await self.services.resources.reload_if_changed()
        return await super()._respond_all(requests)

    async def answer(self, request) -> dict[str, np.ndarray]:
        detector = self.pipeline.detector(self.text(request, "detector")).name  # an unknown one before decoding
        identify = bool(self._scalar(request, configs.IDENTIFY.name))
        embed = identify or bool(self._scalar(request, configs.EMBED.name))
        if embed:
            self.pipeline.require_embedding()  # no embedding model: the service's words, before decoding
        data = self.image_bytes(request)
        pixels = await self.services.images.decode(data)
        analyses = self.services.analysis
        request_id = new_id() if self.pipeline.trials else None  # before the answer: a canary draws by it
        vectors = None
        with self.pipeline.one_version(request_id):
            if embed:
                analysis, vectors = await analyses.embedded_analysis(pixels, detector, identify)
            else:
                analysis = await analyses.analysis(pixels, detector)
        if request_id is not None:
            analysis = await analyses.remember(PIPELINE_OWNER, analysis, digest(data), identify,
                                               request_id=request_id)
        return self.tensors(analysis, vectors, identify)

    def close(self) -> None:
        self.loop.run_until_complete(self.services.close())
        super().close()

    def tensors(self, analysis: Analysis, vectors: np.ndarray | None = None,
                identified: bool = False) -> dict[str, np.ndarray]:
        """The answer's tensors; `vectors`: the faces' embeddings (else the `embedding` output has no rows),
        `identified`: the identity outputs have a row per face (else none)."""
        faces = analysis.model_dump(mode="json")["faces"]
        boxes = [[face["box"][corner] for corner in ("x1", "y1", "x2", "y2")] for face in faces]
        outputs = {configs.ANALYSIS.name: np.array([[analysis.model_dump_json().encode()]], dtype=np.object_),
                   configs.REQUEST_ID.name: np.array([[(analysis.request_id or "").encode()]], dtype=np.object_),
                   configs.BOXES.name: np.array(boxes, np.float32).reshape(1, len(faces), 4),
                   configs.SCORES.name: np.array([[face["score"] for face in faces]], np.float32).reshape(1, -1)}
        for output in self.face_outputs:
            values = [output.value(face) for face in faces]
            if output.tensor.data_type == configs.mc.TYPE_STRING:
                outputs[output.tensor.name] = np.array([[value.encode() for value in values]],
                                                       dtype=np.object_).reshape(1, -1)
            else:
                outputs[output.tensor.name] = np.array([values], np.float32).reshape(1, -1)
        if self.pipeline.embedding is not None:
            outputs.update(self._identity_tensors(faces, vectors, identified))
        return outputs

    def _identity_tensors(self, faces: list[dict], vectors: np.ndarray | None, identified: bool) -> dict:
        dimension = self.pipeline.embedding.dimension
        rows = np.zeros((0, dimension), np.float32) if vectors is None else np.asarray(vectors, np.float32)
        matches = [face["identity"] or {} for face in faces] if identified else []
        return {configs.embedding_output(dimension).name: rows.reshape(1, -1, dimension),
                configs.IDENTITY_ID.name: np.array([[m.get("id", "").encode() for m in matches]],
                                                   dtype=np.object_).reshape(1, -1),
                configs.IDENTITY_NAME.name: np.array([[m.get("name", "").encode() for m in matches]],
                                                     dtype=np.object_).reshape(1, -1),
                configs.IDENTITY_SIMILARITY.name: np.array([[m.get("similarity", np.nan) for m in matches]],
                                                           np.float32).reshape(1, -1)}


class RotateModel(Model):
    """The service's rotation (`ImageService.rotated`): the photo turned counter-clockwise by a multiple of 90
    degrees, encoded as PNG (or JPEG)."""

    def __init__(self, pb_utils):
        super().__init__(pb_utils)
        self.images = ImageService.from_settings(self.settings)

    async def answer(self, request) -> dict[str, np.ndarray]:
        degrees = int(self._scalar(request, "degrees"))
        imaging.check_rotation(degrees)  # before the format and the image are read, as the service does
        fmt = self.text(request, "format") or "png"
        rotated = await self.images.rotated(self.image_bytes(request), degrees, fmt)
        return {configs.ROTATE_OUTPUTS[0].name: np.array([[rotated]], dtype=np.object_)}


def create(pb_utils, parameters: dict[str, str], model_dir: str) -> Model:
    """The model its `faceserve_model` parameter names. The pipeline reads the recipes of the models it calls
    from `model_repository` (default: the repository this model is in)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kind = parameters["faceserve_model"]
    if kind == configs.PIPELINE:
        return PipelineModel(pb_utils, Path(parameters.get("model_repository") or Path(model_dir).parent))
    if kind == configs.ROTATE:
        return RotateModel(pb_utils)
    raise ValueError(f"faceserve_model must be one of {', '.join(configs.MODELS)}, got {kind!r}")
