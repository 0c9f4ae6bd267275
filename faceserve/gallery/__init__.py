"""The face gallery: identities, their face embeddings, and exact search over them (issue 12's storage).

What belongs here: the gallery's tables (`migrations.py`), its records and the identity endpoints' answers
(`records.py`), its operations (`gallery.py`: create, add faces, list, get, delete, export/import), its audit
trail (`audit.py`), the checks on what enters it (`validation.py`), the export file format (`transfer.py`), the
in-memory search matrix (`similarity.py`) and how each process's copy follows the store (`index.py`). What does
not: connections and transactions (`faceserve/store`), computing embeddings or choosing a threshold (the models
and the pipeline), HTTP (the service).

    gallery = Gallery(open_store(settings.store), EmbeddingModel("faceres", "1", 1024))
    person = gallery.create_identity("Ada", {"team": "x"}, faces=[NewFace(vector, sha256, box)])
    [[best, *_]] = gallery.search(vectors[None, :], k=5)     # Match(identity_id, name, similarity)
"""

from faceserve.gallery.gallery import Gallery
from faceserve.gallery.records import (AuditEntry, AuditPage, Box, Deleted, EmbeddingModel, FaceRecord, FacesAdded,
                                       GalleryImport, Identity, IdentityDetail, IdentityPage, IdentitySummary,
                                       ImportCounts, Match, NewFace, StoredFace, StoredIdentity, ThumbnailFrame,
                                       TransferCounts)

__all__ = ["Gallery", "AuditEntry", "AuditPage", "Box", "Deleted", "EmbeddingModel", "FaceRecord", "FacesAdded",
           "GalleryImport", "Identity", "IdentityDetail", "IdentityPage", "IdentitySummary", "ImportCounts", "Match",
           "NewFace", "StoredFace", "StoredIdentity", "ThumbnailFrame", "TransferCounts"]
