"""Number the existing events in id order and start the gap-free sequence after them.

The column becomes unique and required in 0005, its own transaction: PostgreSQL refuses
to alter a table that has row changes still pending in the same transaction."""

from typing import Any

from django.db import migrations, models


def events_number(apps: Any, schema_editor: Any) -> None:
    event_model = apps.get_model("mailqueue", "DeliveryEvent")
    sequence_model = apps.get_model("mailqueue", "EventSequence")
    last = 0
    for pk in event_model.objects.order_by("id").values_list("id", flat=True).iterator():
        last += 1
        event_model.objects.filter(pk=pk).update(seq=last)
    sequence_model.objects.create(pk=1, last=last)


class Migration(migrations.Migration):
    dependencies = [
        ("mailqueue", "0003_complaints"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventSequence",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("last", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AlterModelOptions(name="deliveryevent", options={"ordering": ["seq"]}),
        migrations.AddField(
            model_name="deliveryevent",
            name="seq",
            field=models.BigIntegerField(null=True),
        ),
        migrations.RunPython(events_number, migrations.RunPython.noop),
    ]
