"""The CapabilityStatement is truthful: everything it lists works, nothing else is offered."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.access.test_authorization_matrix import registered_routes
from tests.support.factories import create_patient

# FHIR interactions, and the route each one needs.
INTERACTION_ROUTES = {
    "read": ("GET", "/fhir/{type}/{resource_id}"),
    "vread": ("GET", "/fhir/{type}/{resource_id}/_history/{version_id}"),
    "update": ("PUT", "/fhir/{type}/{resource_id}"),
    "delete": ("DELETE", "/fhir/{type}/{resource_id}"),
    "create": ("POST", "/fhir/{type}"),
    "search-type": ("GET", "/fhir/{type}"),
}
# Bulk Data export: the kick-off, plus the status and file routes every export shares.
EXPORT_ROUTES = {
    ("GET", "/fhir/$export-status/{export_id}"),
    ("DELETE", "/fhir/$export-status/{export_id}"),
    ("GET", "/fhir/$export-file/{export_id}/{name}"),
}


def test_the_statement(fhir_anon: TestClient) -> None:
    response = fhir_anon.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert set(statement["format"]) == {"application/fhir+json", "json"}
    assert statement["implementation"]["url"] == "http://testserver/fhir"
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert [i["code"] for i in rest["interaction"]] == ["transaction"]
    assert rest["security"]["cors"] is False


def test_every_listed_interaction_has_a_route_and_no_route_is_unlisted(
    app: FastAPI, fhir_anon: TestClient
) -> None:
    statement = fhir_anon.get("/fhir/metadata").json()
    routes = {route for route in registered_routes(app) if route[1].startswith("/fhir")}
    listed = {("GET", "/fhir/metadata"), ("POST", "/fhir")}
    for operation in statement["rest"][0].get("operation", []):
        assert operation["name"] == "export"
        listed |= {("GET", "/fhir/$export"), *EXPORT_ROUTES}
    for resource in statement["rest"][0]["resource"]:
        for operation in resource.get("operation", []):
            assert (resource["type"], operation["name"]) == ("Patient", "export")
            listed |= {("GET", "/fhir/Patient/$export"), *EXPORT_ROUTES}
        for interaction in resource["interaction"]:
            method, path = INTERACTION_ROUTES[interaction["code"]]
            route = (
                method,
                path.format(
                    type=resource["type"], resource_id="{resource_id}", version_id="{version_id}"
                ),
            )
            assert route in routes, f"{resource['type']} {interaction['code']}: no route"
            listed.add(route)
        if any(i["code"] == "search-type" for i in resource["interaction"]):
            listed.add(("POST", f"/fhir/{resource['type']}/_search"))
    assert routes == listed


def test_every_listed_search_parameter_is_understood(
    fhir: TestClient, fhir_anon: TestClient
) -> None:
    patient = create_patient(fhir)
    samples = {
        "token": "x",
        "reference": f"Patient/{patient}",
        "date": "2024",
        "string": "x",
    }
    statement = fhir_anon.get("/fhir/metadata").json()
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        for param in resource.get("searchParam", []):
            response = fhir.get(
                f"/fhir/{resource['type']}",
                params={param["name"]: samples[param["type"]]},
                headers={"Prefer": "handling=strict"},
            )
            assert response.status_code == 200, f"{resource['type']}?{param['name']}"
            checked += 1
        # And one it does not list is refused under strict handling.
        if resource.get("searchParam"):
            refused = fhir.get(
                f"/fhir/{resource['type']}",
                params={"_has:Observation:patient:code": "x"},
                headers={"Prefer": "handling=strict"},
            )
            assert refused.status_code == 400
    assert checked == 21  # DocumentReference _content (IHE MHD full-text search) included
