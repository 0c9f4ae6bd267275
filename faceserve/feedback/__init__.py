"""What users tell us the models got wrong: every analysis remembered under its request id, and corrections of it.

What belongs here: the feedback tables (`migrations.py`), what it remembers and stores and the answers built
from them (`records.py`), remembering an answer and checking a correction against it, the CSV export and the
summary (`feedback.py`), the thread that writes remembered answers in group commits (`writer.py`), what a
candidate version's trial compared, written with its request's answer, and its report (`comparisons.py`). What does
not: connections and migrations (`faceserve/store`), which models answered and with which labels
(`faceserve.services.analysis` passes that in), HTTP.

    feedback = Feedback(open_store(settings.store))
    request_id = feedback.remember(caller.principal, Answer(image_sha256, fields, faces))
    feedback.correct(caller.principal, request_id, face_index=0, field="emotion", correct="sad")
"""

from faceserve.feedback.feedback import Feedback
from faceserve.feedback.records import (Answer, Compared, Confusion, Correction, FeedbackRecord, FeedbackSummary,
                                        FieldFeedback, FieldModel)

__all__ = ["Answer", "Compared", "Confusion", "Correction", "Feedback", "FeedbackRecord", "FeedbackSummary",
           "FieldFeedback", "FieldModel"]
