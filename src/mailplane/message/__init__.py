"""Messages themselves, apart from any way in or out: reading and amending RFC 5322
header fields (headers.py) and the cleanup every way in applies before a message is
queued (cleanup.py: trace field, Date, Message-ID). SMTP submission uses it today, the
send API next; neither needs the other to get it (Postfix's cleanup(8) stage).
"""
