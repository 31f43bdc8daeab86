"""Open and click tracking (issue 12): links rewritten and a pixel added at composition,
before DKIM signing; /o/ and /c/ served by the web app under each server's tracking domain;
hits recorded as `opened`/`clicked` events through queue/transitions.py."""
