"""Feedback: every answer remembered as its caller's, corrections of it, their export and summary."""

from __future__ import annotations

import asyncio
import logging

from faceserve.errors import NotFound, StoreUnavailable
from faceserve.feedback import Answer, FeedbackRecord, FeedbackSummary
from faceserve.http.caller import Caller
from faceserve.services.resources import Resources

log = logging.getLogger(__name__)

SETTLE_POLL_S = 0.05  # how often a correction looks again for an answer another process has not yet written


class FeedbackService:
    def __init__(self, resources: Resources):
        self.resources = resources

    async def remember(self, owner: str, answer: Answer, *, written: bool = False,
                       request_id: str | None = None) -> str | None:
        """The request id the answer is remembered under, as `owner`'s (a principal: only they may correct it);
        None when the store cannot be reached (the answer is still worth giving, only its feedback is lost).
        Queued on the event loop itself (microseconds); only a full queue waits, in a worker thread. `written`:
        return once the answer is written (a job's image, whose result must not outlive its answer). `request_id`:
        the id made for the answer before it was computed (None: one is made now)."""
        try:
            feedback = await self.resources.feedback()
            request_id = (feedback.remember(owner, answer, block=False, request_id=request_id)
                          or await asyncio.to_thread(feedback.remember, owner, answer, request_id=request_id))
            if written:
                await asyncio.to_thread(feedback.flush, request_id)
            return request_id
        except StoreUnavailable as exc:
            log.warning("answer not remembered for feedback: %s", exc.message)
            return None

    async def correct(self, caller: Caller, request_id: str, face_index: int | None, field: str, correct: str,
                      model_said: str | None = None, comment: str | None = None) -> FeedbackRecord:
        """`caller`'s correction of an answer they were given (another caller's answer is a 404 `unknown_request`,
        whatever their scopes). An answer given moments ago by another process of the service, still in that
        process's queue, is looked for again until it is written (`Feedback.settling`)."""
        feedback = await self.resources.feedback()
        while True:
            try:
                stored = await asyncio.to_thread(feedback.correct, caller.principal, request_id, face_index, field,
                                                 correct, model_said, comment)
                return stored.answer()
            except NotFound:
                if not feedback.settling(request_id):
                    raise
                await asyncio.sleep(SETTLE_POLL_S)

    async def export_csv(self) -> str:
        return await asyncio.to_thread((await self.resources.feedback()).export_csv)

    async def summary(self) -> FeedbackSummary:
        return await asyncio.to_thread((await self.resources.feedback()).summary)
