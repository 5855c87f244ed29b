from fastapi.testclient import TestClient


def test_healthz_needs_no_token(anon_client: TestClient) -> None:
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_every_dependency(anon_client: TestClient) -> None:
    response = anon_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "clinical_database": "ok",
        "auth_database": "ok",
        "blob_store": "ok",
    }
