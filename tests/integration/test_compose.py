"""The GPU compose file: Triton (no authentication of its own) is reachable only from the service."""

from __future__ import annotations

import yaml

from tests.support import ROOT

COMPOSE = ROOT / "bentos" / "gpu" / "docker-compose.yaml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def networks_of(service: dict) -> list[str]:
    """Compose accepts a list of names or a mapping of name -> options; no key means `default`."""
    networks = service.get("networks", ["default"])
    return list(networks) if isinstance(networks, (list, dict)) else []


def test_triton_publishes_nothing_and_sits_on_internal_networks_only():
    compose = load()
    triton = compose["services"]["triton"]
    assert "ports" not in triton
    assert triton.get("network_mode") is None
    declared = compose.get("networks") or {}
    names = networks_of(triton)
    assert names and all((declared.get(n) or {}).get("internal") is True for n in names), names


def test_service_publishes_only_its_own_port_and_reaches_triton():
    compose = load()
    assert set(compose["services"]) == {"triton", "faceserve"}
    service = compose["services"]["faceserve"]
    assert service["ports"] == ["3000:3000"]
    assert service["environment"]["FACESERVE_BACKEND"] == "grpc://triton:8001"
    shared = set(networks_of(service)) & set(networks_of(compose["services"]["triton"]))
    assert shared, "the service must share Triton's internal network"
    declared = compose["networks"]
    assert any(not (declared.get(n) or {}).get("internal") for n in networks_of(service)), \
        "the service needs a non-internal network for its published port"


def test_public_deployment_is_told_to_set_api_keys():
    compose = load()
    assert "FACESERVE_API_KEYS" in compose["services"]["faceserve"]["environment"]
    assert "FACESERVE_API_KEYS" in COMPOSE.read_text().split("services:")[0]  # the header comment says why
