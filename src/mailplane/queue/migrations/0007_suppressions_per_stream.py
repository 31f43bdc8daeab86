# A suppression may be narrowed to one message stream (a broadcast unsubscribe, issue 11).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mailqueue', '0006_scheduled_and_priority_lanes'),
        ('servers', '0001_initial'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='suppression',
            name='one_suppression',
        ),
        migrations.AddField(
            model_name='suppression',
            name='stream',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='suppressions', to='servers.messagestream'),
        ),
        migrations.AddConstraint(
            model_name='suppression',
            constraint=models.UniqueConstraint(condition=models.Q(('stream__isnull', True)), fields=('organization', 'address'), name='one_suppression'),
        ),
        migrations.AddConstraint(
            model_name='suppression',
            constraint=models.UniqueConstraint(condition=models.Q(('stream__isnull', False)), fields=('organization', 'address', 'stream'), name='one_stream_suppression'),
        ),
    ]
