# Scheduled and cancelled rows and events (`send_at`), and the claim's two lanes (issue 11).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mailqueue', '0007_suppressions_per_stream'),
    ]

    operations = [
        migrations.AddField(
            model_name='queuedrecipient',
            name='priority',
            field=models.PositiveSmallIntegerField(choices=[(0, 'Interactive'), (1, 'Bulk')], default=0),
        ),
        migrations.AlterField(
            model_name='deliveryevent',
            name='type',
            field=models.CharField(choices=[('queued', 'Queued'), ('deferred', 'Deferred'), ('delivered', 'Delivered'), ('bounced', 'Bounced'), ('failed', 'Failed'), ('suppressed', 'Suppressed'), ('complained', 'Complained'), ('unsubscribed', 'Unsubscribed'), ('scheduled', 'Scheduled'), ('cancelled', 'Cancelled')], max_length=12),
        ),
        migrations.AlterField(
            model_name='queuedrecipient',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('deferred', 'Deferred'), ('delivered', 'Delivered'), ('bounced', 'Bounced'), ('failed', 'Failed'), ('suppressed', 'Suppressed'), ('held', 'Held'), ('scheduled', 'Scheduled'), ('cancelled', 'Cancelled')], default='queued', max_length=10),
        ),
        migrations.AddIndex(
            model_name='queuedrecipient',
            index=models.Index(fields=['priority', 'status', 'next_attempt_at'], name='rcpt_due_lane'),
        ),
    ]
