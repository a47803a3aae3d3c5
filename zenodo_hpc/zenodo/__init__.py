"""Talking to Zenodo: the HTTP client with its budget and its rules for tokens (``client``), the harvest of
the record list (``harvest``), a record's files (``fetch``), and the deposit API a release is published
with (``deposit``). Builds on ``record`` (a download is checked to be an archive) and ``core``."""
