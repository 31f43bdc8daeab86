from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mailqueue", "0004_event_sequence"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deliveryevent",
            name="seq",
            field=models.BigIntegerField(unique=True),
        ),
    ]
