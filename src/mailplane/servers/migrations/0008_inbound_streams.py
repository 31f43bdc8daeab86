"""Streams of kind `inbound`, and the `inbound` stream (Postmark's default id) for every
server made before there were any: new servers get it at creation."""

from django.db import migrations, models


def add_inbound_streams(apps, schema_editor):
    EmailServer = apps.get_model("servers", "EmailServer")
    MessageStream = apps.get_model("servers", "MessageStream")
    have = set(MessageStream.objects.filter(stream_id="inbound").values_list("server_id", flat=True))
    MessageStream.objects.bulk_create(
        MessageStream(
            server_id=pk, stream_id="inbound", name="Default Inbound Stream", kind="inbound"
        )
        for pk in EmailServer.objects.exclude(pk__in=have).values_list("pk", flat=True)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("servers", "0007_server_and_key_caps_and_pause"),
    ]

    operations = [
        migrations.AlterField(
            model_name="messagestream",
            name="kind",
            field=models.CharField(
                choices=[
                    ("transactional", "Transactional"),
                    ("broadcast", "Broadcast"),
                    ("inbound", "Inbound"),
                ],
                max_length=20,
            ),
        ),
        migrations.RunPython(add_inbound_streams, migrations.RunPython.noop),
    ]
