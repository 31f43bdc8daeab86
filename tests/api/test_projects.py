def test_project_crud(account):
    created = account.client.post(
        "/api/projects/", {"name": "Q4 outreach", "description": "cold email"}, format="json"
    )
    assert created.status_code == 201
    pid = created.json()["id"]
    assert account.client.get(f"/api/projects/{pid}/").json()["name"] == "Q4 outreach"
    renamed = account.client.patch(f"/api/projects/{pid}/", {"name": "Q1"}, format="json")
    assert renamed.json()["name"] == "Q1"
    assert account.client.get("/api/projects/").json()["count"] == 1
    assert account.client.delete(f"/api/projects/{pid}/").status_code == 204
    assert account.client.get(f"/api/projects/{pid}/").status_code == 404


def test_project_validation(account):
    assert (
        "name"
        in account.client.post("/api/projects/", {}, format="json").json()["error"]["details"]
    )
    account.client.post("/api/projects/", {"name": "dup"}, format="json")
    again = account.client.post("/api/projects/", {"name": "dup"}, format="json")
    assert again.status_code == 409
    assert "name" in again.json()["error"]["details"]


def test_same_project_name_allowed_in_two_accounts(account, other_account):
    assert account.client.post("/api/projects/", {"name": "x"}, format="json").status_code == 201
    assert (
        other_account.client.post("/api/projects/", {"name": "x"}, format="json").status_code == 201
    )
