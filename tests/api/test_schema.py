from rest_framework.test import APIClient


def test_openapi_schema_and_docs_are_served(db):
    client = APIClient()
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/mailboxes/",
        "/api/relay-servers/",
        "/api/userinfo/",
        "/api/tasks/{task_id}/",
        "/api/domains/",
    ):
        assert path in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
