"""SMTP listeners: submission (465 implicit TLS, 587 STARTTLS) and the inbound MX.

Each listener is aiosmtpd's protocol class (`protocol.MailplaneSMTP`) driving a handler
object (`submission.SubmissionHandler`, `mx.MXHandler`) whose `handle_<VERB>` hooks decide.
Durable hand-offs happen before the 250: submission puts mail on the outbound queue,
the MX files it into Maildir.
"""
