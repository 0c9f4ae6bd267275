"""The decoder vocabulary: every class that decodes a repository model's outputs, by its `decoder` name.

A decoder class (a head kind, a detector that runs a model, the landmark model) declares its name in
`decoder` and registers itself by being defined. It also declares how `convert`'s parity check compares
two runs of its model (the source framework's and the ONNX one), since only the decoder knows what its
outputs mean:

- `consumed`: the outputs in the form the decoding reads them (where raw tensors are not comparable);
- `decisions`: what each sample's outputs lead to (a label, a kept box, a nearest face);
- `agree`: whether two runs' decisions are the same.

The role packages import every module they hold (`import_modules`), so a new decoder is one new module in
`faceserve/models/heads/` or `faceserve/models/detectors/`: the pipeline, `convert`'s `--decoder` choices
and its parity check find it through `decoders()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import ClassVar, Iterable

import numpy as np

from faceserve.models.spec import ModelSpec, SpecError

# The modules that hold decoder classes: the two packages discover their own modules.
ROLE_MODULES = ("faceserve.models.heads", "faceserve.models.detectors", "faceserve.models.landmarks")

_REGISTRY: dict[str, type[Decoder]] = {}


class Decoder:
    """A class that decodes the outputs of repository models whose `decoder` parameter is its `decoder`."""

    decoder: ClassVar[str | None] = None  # None: decodes no repository model (an in-process detector)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("decoder")
        if name is None:
            return
        if cls.decisions is Decoder.decisions:
            raise TypeError(f"{cls.__name__} decodes {name!r} but does not declare its parity `decisions`")
        known = _REGISTRY.get(name)
        if known is not None and _where(known) != _where(cls):
            raise TypeError(f"decoder {name!r} is declared twice: {_where(known)} and {_where(cls)}")
        _REGISTRY[name] = cls

    @staticmethod
    def consumed(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw outputs in the form this decoding reads them (what parity is judged on)."""
        return outputs

    @staticmethod
    def decisions(spec: ModelSpec, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """What each sample of a batch leads to, one row per sample (what agreement is counted on)."""
        raise NotImplementedError

    @staticmethod
    def agree(want: np.ndarray, got: np.ndarray) -> np.ndarray:
        """Per decision: do the two runs decide the same?"""
        return want == got


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def decoders() -> dict[str, type[Decoder]]:
    """Every decoder, by name (sorted)."""
    for module in ROLE_MODULES:
        importlib.import_module(module)
    return dict(sorted(_REGISTRY.items()))


def decoder_for(spec: ModelSpec) -> type[Decoder]:
    known = decoders()
    if spec.decoder not in known:
        raise SpecError(f"{spec.name}: decoder {spec.decoder!r} is unknown (known: {', '.join(known)})")
    return known[spec.decoder]


def descendants(base: type) -> list[type]:
    """Every subclass of `base`, at any depth, in the order they were defined (breadth first)."""
    found, pending = [], list(base.__subclasses__())
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def import_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of a package (its `__name__` and `__path__`), so that its classes register."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in the logits' own dtype, clipped first: raw logits reach several hundred."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
