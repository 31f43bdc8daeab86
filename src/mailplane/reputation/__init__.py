"""Sending reputation of servers and server keys: volume caps and the automatic pause.

caps.py    hourly and daily caps, counted in recipients, per server and per key: a key in
           `refuse` mode has over-cap mail refused at the send API (429 and when it would
           be accepted); in `hold` mode (and mail sent without a key) delivery holds
           over-cap recipients unattempted until the window allows, in order.
pause.py   a server or key whose hard-bounce or complaint rate over the last day crosses
           the thresholds is paused: its sends refused (403 sending_paused), its queued mail
           held, the account told (ReputationNotice); an operator resumes it.
"""
