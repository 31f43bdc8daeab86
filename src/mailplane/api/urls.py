"""Routes. Trailing slashes everywhere, as the seeds call them."""

from __future__ import annotations

from django.urls import path, register_converter

from mailplane.api import (
    account,
    bulk,
    dns_providers,
    domains,
    exports,
    identities,
    inbound,
    index,
    mailboxes,
    messages,
    monitoring,
    projects,
    provider_webhooks,
    queue,
    relays,
    reputation,
    scheduling,
    send,
    server_messages,
    server_suppressions,
    servers,
    stats,
    tasks,
    tracking,
    unsubscribe,
    webhooks,
)
from mailplane.api.fields import IdConverter

register_converter(IdConverter, "id")

urlpatterns = [
    path("api/", index.ApiIndexView.as_view(), name="api-index"),
    path("api/userinfo/", account.UserInfoView.as_view(), name="userinfo"),
    path("api/status/", monitoring.StatusView.as_view(), name="status"),
    path("api/api-keys/", account.ApiKeyListView.as_view(), name="api-key-list"),
    path("api/api-keys/<id:pk>/", account.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api/relay-servers/", relays.RelayServerListView.as_view(), name="relay-server-list"),
    path(
        "api/relay-servers/<id:pk>/",
        relays.RelayServerDetailView.as_view(),
        name="relay-server-detail",
    ),
    path("api/projects/", projects.ProjectListView.as_view(), name="project-list"),
    path("api/projects/<id:pk>/", projects.ProjectDetailView.as_view(), name="project-detail"),
    path("api/domains/", domains.DomainListView.as_view(), name="domain-list"),
    path("api/domains/<id:pk>/", domains.DomainDetailView.as_view(), name="domain-detail"),
    path("api/domains/<id:pk>/verify/", domains.DomainVerifyView.as_view(), name="domain-verify"),
    path(
        "api/domains/<id:pk>/publish-dns/",
        dns_providers.DomainPublishDnsView.as_view(),
        name="domain-publish-dns",
    ),
    path(
        "api/dns-providers/", dns_providers.DnsProviderListView.as_view(), name="dns-provider-list"
    ),
    path(
        "api/dns-providers/<id:pk>/",
        dns_providers.DnsProviderDetailView.as_view(),
        name="dns-provider-detail",
    ),
    path(
        "api/dns-providers/<id:pk>/test/",
        dns_providers.DnsProviderTestView.as_view(),
        name="dns-provider-test",
    ),
    path("api/mailboxes/", mailboxes.MailboxListView.as_view(), name="mailbox-list"),
    path("api/mailboxes/bulk/", bulk.MailboxBulkCreateView.as_view(), name="mailbox-bulk-create"),
    path("api/mailboxes/<id:pk>/", mailboxes.MailboxDetailView.as_view(), name="mailbox-detail"),
    # The service's reference also shows POST /mailbox/ (singular, no /api).
    path("mailbox/", mailboxes.MailboxListView.as_view(), name="mailbox-create-alias"),
    # Outreach-tool CSV exports, at the path the service's reference gives (no /api).
    path(
        "mailbox/download/<str:layout>/",
        exports.MailboxExportView.as_view(),
        name="mailbox-export",
    ),
    path("api/messages/", messages.MessageListView.as_view(), name="message-list"),
    path("api/messages/<id:pk>/", messages.MessageDetailView.as_view(), name="message-detail"),
    # Email servers (account keys) and sending through one (server keys: api/send.py).
    path("api/servers/", servers.EmailServerListView.as_view(), name="server-list"),
    path("api/servers/<id:pk>/", servers.EmailServerDetailView.as_view(), name="server-detail"),
    path(
        "api/servers/<id:pk>/tracking/",
        tracking.ServerTrackingView.as_view(),
        name="server-tracking",
    ),
    path(
        "api/servers/<id:pk>/tracking/verify/",
        tracking.ServerTrackingVerifyView.as_view(),
        name="server-tracking-verify",
    ),
    # What recipients' mail clients fetch, under each server's tracking domain (no slash:
    # the URLs are in mail already sent and must never change).
    path("o/<str:token>", tracking.TrackingOpenView.as_view(), name="tracking-open"),
    path("c/<str:token>", tracking.TrackingClickView.as_view(), name="tracking-click"),
    path("api/servers/<id:pk>/keys/", servers.ServerKeyListView.as_view(), name="server-key-list"),
    path(
        "api/servers/<id:pk>/bounce-rules/",
        servers.BounceRuleListView.as_view(),
        name="bounce-rule-list",
    ),
    path(
        "api/bounce-rules/<id:pk>/",
        servers.BounceRuleDetailView.as_view(),
        name="bounce-rule-detail",
    ),
    path(
        "api/server-keys/<id:pk>/",
        servers.ServerKeyDetailView.as_view(),
        name="server-key-detail",
    ),
    path("api/server/", send.ServerView.as_view(), name="server-self"),
    path(
        "api/server/messages/",
        server_messages.ServerMessageListView.as_view(),
        name="server-message-list",
    ),
    path(
        "api/server/messages/<id:pk>/",
        server_messages.ServerMessageDetailView.as_view(),
        name="server-message-detail",
    ),
    path(
        "api/server/suppressions/",
        server_suppressions.SuppressionListView.as_view(),
        name="server-suppression-list",
    ),
    path(
        "api/server/suppressions/export/",
        server_suppressions.SuppressionExportView.as_view(),
        name="server-suppression-export",
    ),
    path(
        "api/server/suppressions/<id:pk>/",
        server_suppressions.SuppressionDetailView.as_view(),
        name="server-suppression-detail",
    ),
    # Sender identities (account keys); the mailed link is public (its token authenticates).
    path(
        "api/sender-identities/",
        identities.SenderIdentityListView.as_view(),
        name="sender-identity-list",
    ),
    path(
        "api/sender-identities/confirm/",
        identities.SenderIdentityConfirmView.as_view(),
        name="sender-identity-confirm",
    ),
    path(
        "api/sender-identities/<id:pk>/",
        identities.SenderIdentityDetailView.as_view(),
        name="sender-identity-detail",
    ),
    path(
        "api/sender-identities/<id:pk>/resend/",
        identities.SenderIdentityResendView.as_view(),
        name="sender-identity-resend",
    ),
    path(
        "api/server/messages/<id:pk>/cancel/",
        scheduling.ServerMessageCancelView.as_view(),
        name="server-message-cancel",
    ),
    # Webhook endpoints of a server: with an account key, and with the server's full key.
    path(
        "api/servers/<id:pk>/webhooks/",
        webhooks.ServerWebhookListView.as_view(),
        name="server-webhook-list",
    ),
    path("api/webhooks/<id:pk>/", webhooks.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "api/webhooks/<id:pk>/rotate-secret/",
        webhooks.WebhookRotateView.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "api/webhooks/<id:pk>/attempts/",
        webhooks.WebhookAttemptListView.as_view(),
        name="webhook-attempt-list",
    ),
    path(
        "api/webhooks/<id:pk>/replay/", webhooks.WebhookReplayView.as_view(), name="webhook-replay"
    ),
    path(
        "api/webhook-notices/", webhooks.WebhookNoticeListView.as_view(), name="webhook-notice-list"
    ),
    path(
        "api/reputation-notices/",
        reputation.ReputationNoticeListView.as_view(),
        name="reputation-notice-list",
    ),
    path(
        "api/server/webhooks/",
        webhooks.ServerSelfWebhookListView.as_view(),
        name="server-self-webhook-list",
    ),
    path(
        "api/server/webhooks/<id:pk>/",
        webhooks.ServerSelfWebhookDetailView.as_view(),
        name="server-self-webhook-detail",
    ),
    path(
        "api/server/webhooks/<id:pk>/rotate-secret/",
        webhooks.ServerSelfWebhookRotateView.as_view(),
        name="server-self-webhook-rotate-secret",
    ),
    path(
        "api/server/webhooks/<id:pk>/attempts/",
        webhooks.ServerSelfWebhookAttemptListView.as_view(),
        name="server-self-webhook-attempt-list",
    ),
    path(
        "api/server/webhooks/<id:pk>/replay/",
        webhooks.ServerSelfWebhookReplayView.as_view(),
        name="server-self-webhook-replay",
    ),
    # Inbound streams: the address and domain (account key), the messages received and
    # their raw bytes (account key, or the server's full key).
    path(
        "api/servers/<id:pk>/inbound/", inbound.ServerInboundView.as_view(), name="server-inbound"
    ),
    path(
        "api/servers/<id:pk>/inbound/verify/",
        inbound.ServerInboundVerifyView.as_view(),
        name="server-inbound-verify",
    ),
    path(
        "api/servers/<id:pk>/inbound/messages/",
        inbound.ServerInboundMessageListView.as_view(),
        name="server-inbound-message-list",
    ),
    path(
        "api/inbound-messages/<id:pk>/",
        inbound.InboundMessageDetailView.as_view(),
        name="inbound-message-detail",
    ),
    path(
        "api/inbound-messages/<id:pk>/raw/",
        inbound.InboundMessageRawView.as_view(),
        name="inbound-message-raw",
    ),
    path(
        "api/server/inbound-messages/",
        inbound.ServerSelfInboundMessageListView.as_view(),
        name="server-self-inbound-message-list",
    ),
    path(
        "api/server/inbound-messages/<id:pk>/",
        inbound.ServerSelfInboundMessageDetailView.as_view(),
        name="server-self-inbound-message-detail",
    ),
    path(
        "api/server/inbound-messages/<id:pk>/raw/",
        inbound.ServerSelfInboundMessageRawView.as_view(),
        name="server-self-inbound-message-raw",
    ),
    # The queue of a server (queue/waiting.py): with an account key, and the server's full key.
    path("api/servers/<id:pk>/queue/", queue.ServerQueueView.as_view(), name="server-queue"),
    path(
        "api/servers/<id:pk>/queue/release/",
        queue.ServerQueueReleaseView.as_view(),
        name="server-queue-release",
    ),
    path(
        "api/servers/<id:pk>/queue/retry/",
        queue.ServerQueueRetryView.as_view(),
        name="server-queue-retry",
    ),
    path(
        "api/servers/<id:pk>/queue/cancel/",
        queue.ServerQueueCancelView.as_view(),
        name="server-queue-cancel",
    ),
    path("api/server/queue/", queue.SelfQueueView.as_view(), name="server-self-queue"),
    path(
        "api/server/queue/release/",
        queue.SelfQueueReleaseView.as_view(),
        name="server-self-queue-release",
    ),
    path(
        "api/server/queue/retry/",
        queue.SelfQueueRetryView.as_view(),
        name="server-self-queue-retry",
    ),
    path(
        "api/server/queue/cancel/",
        queue.SelfQueueCancelView.as_view(),
        name="server-self-queue-cancel",
    ),
    # Resuming a paused server or key (reputation/pause.py), where the install allows it.
    path("api/servers/<id:pk>/resume/", queue.ServerResumeView.as_view(), name="server-resume"),
    path(
        "api/server-keys/<id:pk>/resume/",
        queue.ServerKeyResumeView.as_view(),
        name="server-key-resume",
    ),
    # Stats (analytics/): with an account key, and with the server's full key.
    path("api/servers/<id:pk>/stats/", stats.ServerStatsView.as_view(), name="server-stats"),
    path(
        "api/servers/<id:pk>/stats/latency/",
        stats.ServerStatsLatencyView.as_view(),
        name="server-stats-latency",
    ),
    path(
        "api/servers/<id:pk>/stats/bounce-domains/",
        stats.ServerStatsBounceDomainsView.as_view(),
        name="server-stats-bounce-domains",
    ),
    path("api/server/stats/", stats.SelfStatsView.as_view(), name="server-self-stats"),
    path(
        "api/server/stats/latency/",
        stats.SelfStatsLatencyView.as_view(),
        name="server-self-stats-latency",
    ),
    path(
        "api/server/stats/bounce-domains/",
        stats.SelfStatsBounceDomainsView.as_view(),
        name="server-self-stats-bounce-domains",
    ),
    path("api/email/", send.EmailSendView.as_view(), name="email-send"),
    path("api/email/batch/", send.EmailBatchView.as_view(), name="email-batch"),
    path("api/tasks/<str:task_id>/", tasks.TaskDetailView.as_view(), name="task-detail"),
    # Broadcast messages' List-Unsubscribe links (RFC 8058): the token is the credential.
    path(
        "unsubscribe/<str:token>/",
        unsubscribe.UnsubscribeView.as_view(),
        name="unsubscribe",
    ),
    # Provider event webhooks: signed by the provider, not called with an API key.
    path(
        "webhooks/mailgun/<id:relay_id>/",
        provider_webhooks.MailgunWebhookView.as_view(),
        name="webhook-mailgun",
    ),
    path(
        "webhooks/sendgrid/<id:relay_id>/",
        provider_webhooks.SendGridWebhookView.as_view(),
        name="webhook-sendgrid",
    ),
]
