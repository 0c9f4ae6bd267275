"""One photo (or a batch) through the models: `analyze`, `annotate`, `classify`, each answer remembered for
feedback as its caller's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from faceserve.feedback import Answer, Compared, FieldModel
from faceserve.http.caller import Caller
from faceserve.models.versions import model_ref
from faceserve.pipeline import imaging
from faceserve.pipeline.annotate import annotate
from faceserve.pipeline.policy import DeclinePolicy
from faceserve.pipeline.schemas import Analysis, BatchAnalysis, Classification
from faceserve.services.feedback import FeedbackService
from faceserve.services.images import ImageService, digest
from faceserve.services.resources import Resources
from faceserve.store import new_id


class AnalysisService:
    def __init__(self, resources: Resources, images: ImageService, feedback: FeedbackService):
        self.resources, self.images, self.feedback = resources, images, feedback
        self.pipeline = resources.pipeline
        settings = resources.settings
        self.decline: DeclinePolicy | None = None
        self._decline_model: str | None = None
        if settings.decline_labels:
            self.decline = DeclinePolicy(settings.decline_labels, settings.decline_threshold)
            self._decline_model = self.decline.model(
                {name: spec.labels for name, spec in resources.repository.classifiers.items()})

    async def analysis(self, pixels: np.ndarray, detector: str | None = None, identify: bool = False) -> Analysis:
        """The faces of decoded pixels; with `identify`, each one's best match in the gallery. Remembers nothing."""
        if not identify:
            return await self.pipeline.analyze(pixels, detector)
        return await (await self.resources.identity()).analyze(pixels, detector)

    async def embedded_analysis(self, pixels: np.ndarray, detector: str | None = None,
                                identify: bool = False) -> tuple[Analysis, np.ndarray]:
        """`analysis`, and each face's unit embedding (one row per face, the answer's order). Remembers nothing."""
        if not identify:
            return await self.pipeline.analyze_and_embed(pixels, detector)
        return await (await self.resources.identity()).analyze_and_embed(pixels, detector)

    async def analyze(self, caller: Caller, upload: Path | None = None, b64: str | None = None,
                      url: str | None = None, detector: str | None = None, identify: bool = False,
                      keep_image: bool = False) -> Analysis:
        """One image's faces, remembered as `caller`'s under the answer's `request_id` (the image's bytes too
        with `keep_image`)."""
        pixels, data = await self.images.image_and_bytes(upload, b64, url)
        return await self.analyze_decoded(caller.principal, pixels, data, detector, identify, keep_image)

    async def analyze_decoded(self, owner: str, pixels: np.ndarray, data: bytes, detector: str | None,
                              identify: bool, keep_image: bool = False, written: bool = False) -> Analysis:
        """`analysis` of the image `data` decoded as `pixels`, remembered as `owner`'s (`written`: returned once
        the answer is written, not only queued)."""
        request_id = new_id()  # before the answer: a canary draws by it
        with self.pipeline.one_version(request_id):
            analysis = await self.analysis(pixels, detector, identify)
        return await self.remember(owner, analysis, digest(data), identify, data if keep_image else None, written,
                                   request_id)

    async def analyze_batch(self, caller: Caller, uploads: list[Path] | None, b64s: list[str] | None,
                            detector: str | None = None, identify: bool = False) -> BatchAnalysis:
        """`analyze` for several images (with `identify`, each face's best match as `analyze` answers it); every
        image is checked before any is decoded, all their faces share model calls."""
        items = self.images.batch_items(uploads, b64s)
        if identify:
            await self.resources.identity()  # no embedding model, or no store: refused before any image is decoded
        images = await self.images.images_with_digests(items)
        request_ids = [new_id() for _ in images]
        with self.pipeline.one_version(request_ids[0] if request_ids else None):  # one draw for the whole request
            analyses = await asyncio.gather(*(self.analysis(pixels, detector, identify) for pixels, _ in images))
        return BatchAnalysis(results=[await self.remember(caller.principal, analysis, image_digest, identify,
                                                          request_id=request_id)
                                      for analysis, (_, image_digest), request_id in zip(analyses, images,
                                                                                         request_ids)])

    async def annotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       detector: str | None = None, fmt: str = "png", landmarks: bool = False) -> bytes:
        """The photo with each face boxed and captioned (and its landmarks dotted), encoded as `fmt`; an image
        the decline policy names is a 422 `image_declined`."""
        pixels = await self.images.image(upload, b64, url)
        if self.decline is not None:
            labels = self.resources.repository.classifiers[self._decline_model].labels
            self.decline.check(await self.pipeline.classify(pixels, self._decline_model, len(labels)))
        analysis = await self.pipeline.analyze(pixels, detector)
        return await asyncio.to_thread(lambda: imaging.encode(annotate(pixels, analysis, landmarks), fmt))

    async def classify(self, caller: Caller, upload: Path | None = None, b64: str | None = None,
                       url: str | None = None, model: str | None = None, top_k: int = 5) -> Classification:
        self.pipeline.check_top_k(top_k, self.resources.settings.limits.max_top_k)
        pixels, data = await self.images.image_and_bytes(upload, b64, url)
        answer = await self.pipeline.classify(pixels, model, top_k)
        spec = self.resources.repository.classifiers[answer.model]
        answer.request_id = await self.feedback.remember(caller.principal, Answer(
            digest(data), {"label": FieldModel(model_ref(spec.name, spec.version), spec.labels)},
            [{"label": answer.top_k[0].label}], per_face=False))
        return answer

    async def remember(self, owner: str, analysis: Analysis, image_digest: str, identified: bool,
                       image: bytes | None = None, written: bool = False,
                       request_id: str | None = None) -> Analysis:
        """`analysis` remembered as `owner`'s, with what its trials compared, under `request_id` (set as its
        `request_id`; None where the store cannot be reached)."""
        # the versions that answered (`analysis.models`), even where a swap has served others since
        answering = {c.field: c.candidate for c in analysis.comparisons if c.answered_by_candidate}
        fields = {head.field: FieldModel(analysis.models.get(head.field, model_ref(head.spec.name, head.spec.version)),
                                         answering.get(head.field, head.spec).labels or None)
                  for head in self.pipeline.heads}
        if identified:
            fields["identity"] = FieldModel(analysis.models[self.pipeline.embedding.spec.task])
        answers = [{field: _said(getattr(face, field, None)) for field in fields} for face in analysis.faces]
        compared = tuple(Compared(c.field, c.serving.name, c.mode, c.serving.version, c.candidate.version,
                                  c.answered_by_candidate, [_said(v) for v in c.serving_values],
                                  [_said(v) for v in c.candidate_values], c.serving_ms, c.candidate_ms)
                         for c in analysis.comparisons)
        analysis.request_id = await self.feedback.remember(
            owner, Answer(image_digest, fields, answers, image=image, compared=compared), written=written,
            request_id=request_id)
        return analysis


def _said(value: Any) -> str | None:
    """What a model said for a field, as text: a label, a number, an identity's name ("unknown": nobody known)."""
    if value is None:
        return "unknown"
    if hasattr(value, "label"):
        return value.label
    if hasattr(value, "name"):
        return value.name
    if isinstance(value, dict) and "label" in value:  # a head the schema does not type
        return value["label"]
    return f"{value:.1f}" if isinstance(value, float) else str(value)
