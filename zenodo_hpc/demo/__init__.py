"""The offline demo (``demo``) and the loopback stand-ins it runs against (``doubles``: a Zenodo API and
GitHub codeload on 127.0.0.1, built from recorded real responses). Nothing in the product imports them:
they serve the demo and the tests."""
