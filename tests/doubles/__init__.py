"""Doubles of the services zenodo-hpc talks to, for the tests and the benchmarks: real HTTP servers on 127.0.0.1.

One module per service, each answering as the real one does (the code and recorded answers it follows are cited in
the module and in ``tests/fixtures/``; see ``docs/doubles.md``):

- :mod:`doubles.zenodo_records`: Zenodo's records, search and files beyond what the demo's server serves (the
  package's :mod:`zenodo_hpc.demo.server`, codeload included): withdrawn and restricted records, hostile hits;
- :mod:`doubles.zenodo_deposit`: Zenodo's deposit API (depositions, files, versions, publishing);
- :mod:`doubles.zenodo`: :class:`ZenodoDouble`, the whole Zenodo double, with rate limits and faults on demand;
- :mod:`doubles.elsewhere`: :class:`HeaderRecorder`, another origin that records whether a token reached it;
- :mod:`doubles.kaggle_api`: :class:`KaggleDouble`, the Kaggle API the official client talks to;
- :mod:`doubles.webhook`: :class:`Webhook`, a chat tool's incoming webhook (pytest-httpserver).

Not part of the installed package: tests import it as ``doubles`` (pytest puts ``tests/`` on ``sys.path``), the
benchmarks through ``benchmarks/_common.py``, a reader's shell with ``PYTHONPATH=tests``.
"""

from zenodo_hpc.demo.server import ACCESS_RIGHTS, SHAPES, RequestRecord, make_zip

from .elsewhere import HeaderRecorder, RecordedRequest
from .kaggle_api import KaggleDouble
from .zenodo import FAULT_MODES, ZENODO_GUEST_LIMITS, ZENODO_TOKEN_LIMITS, ZenodoDouble

__all__ = [
    "ACCESS_RIGHTS",
    "FAULT_MODES",
    "SHAPES",
    "ZENODO_GUEST_LIMITS",
    "ZENODO_TOKEN_LIMITS",
    "HeaderRecorder",
    "KaggleDouble",
    "RecordedRequest",
    "RequestRecord",
    "ZenodoDouble",
    "make_zip",
]
