"""The offline demo (``demo``) and the loopback server it runs against (``server``: the records, search and files
of Zenodo's API and GitHub's codeload on 127.0.0.1, answering as the real services do). Nothing in the product
imports them: they serve the demo, and the tests' doubles (tests/doubles/) extend the server."""
