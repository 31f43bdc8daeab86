from django.contrib.auth import get_user_model

from mailplane.relays.services import relay_server_create


def test_admin_lists_servers_without_exposing_secrets(account, client):
    server = relay_server_create(
        organization=account.org,
        name="sg",
        provider="sendgrid",
        credentials={"api_key": "SG.very-secret-value-9876"},
    )
    admin_user = get_user_model().objects.create_superuser("root", "root@x.test", "pw-123456789")
    client.force_login(admin_user)
    page = client.get(f"/admin/relays/relayserver/{server.pk}/change/")
    assert page.status_code == 200
    assert b"very-secret-value" not in page.content
    assert b"****9876" in page.content
