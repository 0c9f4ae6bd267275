"""`faceserve/services/models.py`: `/models` from the repository and the pipeline, never the full path."""

from __future__ import annotations


def test_models_names_the_backend_the_repository_and_the_detectors(services):
    info = services.models.info()
    resources = services.resources
    assert (info.backend, info.repository) == ("fake", resources.repository.path.name)
    assert [model["name"] for model in info.models] == [spec.name for spec in resources.repository.specs.values()]
    assert (info.detectors, info.default_detector) == (resources.pipeline.detectors,
                                                      resources.pipeline.default_detector)
    assert info.missing == resources.repository.missing
