"""A record's license, read from its Zenodo metadata, and what kind of license it is.

Every export says which license each record carries, so that a user can keep the records whose license allows
what they do (``export.license_categories``). Zenodo gives one license id per record, as the record's authors
chose it; this module reads it and sorts it into one of :data:`CATEGORIES`:

- ``permissive``: use, change and share, on condition of attribution at most;
- ``copyleft``: the same, on condition that what is shared stays under the same license;
- ``other``: anything else (non-commercial, no derivatives, proprietary, a custom or unreadable license, an id
  this table does not know): read the license before use;
- ``none``: the record has no license (Zenodo's ``notspecified`` too: "License Not Specified").

Where the ids come from
    Zenodo's license vocabulary: ``zenodo/zenodo-rdm``, ``app_data/vocabularies/licenses.csv`` (commit
    ``63864033c870734cea9cfae07b6968945e412ba3``, file last changed in ``d47c0a48364e89c247ce6c73e5526afcd83e0171``):
    SPDX ids in lower case (``mit``, ``apache-2.0``, ``gpl-3.0-only``, ``cc-by-4.0``) and Zenodo's own
    (``other-open``, ``notspecified``, ...). Its ``id``, ``title__en`` and ``props__url`` columns are
    ``licenses.csv`` beside this module, unchanged (444 ids): facts (identifiers, names, URLs) of the SPDX License
    List (spdx.org/licenses) as Zenodo adopted them, plus Zenodo's own ids (``other-*``, ``notspecified``, ...).
    Records made before Zenodo moved to InvenioRDM (October 2023) may carry a legacy id (``gpl-3.0``, ``cc-zero``,
    upper case ``CC-BY-4.0`` as in the recorded ``tests/fixtures/zenodo/search_legacy_2021.json``): :data:`LEGACY_IDS`
    maps them as Zenodo itself does (``legacy/zenodo_legacy/data/legacy_to_rdm_map.json`` of the same commit, the
    entries whose two sides differ).

Where a record holds it
    The legacy JSON every search and record answer of ``/api/records`` gives (what harvest stores):
    ``metadata.license = {"id": "cc-by-4.0"}`` (``tests/fixtures/zenodo/record_2023.json``), a plain string in
    older records, or no ``license`` at all (``record_current_2025.json``). InvenioRDM's own JSON:
    ``metadata.rights = [{"id": "mit", "title": {...}, ...}]``, or ``[{"title": {...}}]`` for a custom license
    (``inveniosoftware/invenio-rdm-records``, ``services/schemas/metadata.py``, ``RightsSchema``). When a record
    has several, the first counts, as in Zenodo's legacy serializer (``site/zenodo_rdm/legacy/serializers/schemas/
    common.py``, ``resolve_license``: "Zenodo legacy only accepts one license").

The categories
    ``permissive``: every license of the Blue Oak Council's list of permissive licenses, all its ratings
    (``blueoakcouncil/blue-oak-list-npm-package``, ``index.json``, commit
    ``2781bcb6d87803fa209d173f402e867d4d07e74c``), plus the public-domain and attribution-only licenses for data and
    documents it does not rate: Creative Commons BY (every version and port) and CC0, CC-PDDC, PDDL, ODC-BY,
    CDLA-Permissive, Zenodo's ``other-pd`` and ``other-at``. ``copyleft``: the share-alike families, named one by one
    in :data:`COPYLEFT` and :data:`COPYLEFT_FAMILIES` (GPL, LGPL, AGPL, MPL, EPL, EUPL, CDDL, OSL, CeCILL but
    CeCILL-B, CC BY-SA, ODbL, GFDL, OFL, ...). Every other id is ``other``: a non-commercial or no-derivatives
    license is not permissive, and an id nobody sorted is not guessed at.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

PERMISSIVE = "permissive"
COPYLEFT_CATEGORY = "copyleft"
OTHER = "other"
NONE = "none"
CATEGORIES = (PERMISSIVE, COPYLEFT_CATEGORY, OTHER, NONE)

# A license id as it may be stored: short, lower case, SPDX's characters. "_" because Zenodo's legacy ids have it
# (cpal_1.0). Anything else in a record's license is not an id: the record counts as having an unreadable license.
LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
UNREADABLE = "unknown"  # the license of a record that has one, but no readable id (a custom license, a bad value)
NOT_SPECIFIED = "notspecified"  # Zenodo's "License Not Specified": no license

# Zenodo's legacy ids that differ from today's (zenodo-rdm, legacy_to_rdm_map.json; see the module's docstring).
LEGACY_IDS: Mapping[str, str] = {
    "agpl-1.0": "agpl-1.0-only", "bsd-2-clause-freebsd": "bsd-2-clause-views", "bsd-2-clause-netbsd": "bsd-2-clause",
    "gfdl-1.1": "gfdl-1.1-only", "gfdl-1.2": "gfdl-1.2-only", "gfdl-1.3": "gfdl-1.3-only", "gpl-1.0": "gpl-1.0-only",
    "gpl-1.0+": "gpl-1.0-or-later", "gpl-2.0+": "gpl-2.0-or-later", "gpl-3.0+": "gpl-3.0-or-later",
    "lgpl-2.0": "lgpl-2.0-only", "lgpl-2.0+": "lgpl-2.0-or-later", "lgpl-2.1+": "lgpl-2.1-or-later",
    "lgpl-3.0+": "lgpl-3.0-or-later", "cc-zero": "cc0-1.0", "apache2.0": "apache-2.0", "apl1.0": "apl-1.0",
    "bsl1.0": "bsl-1.0", "cpal_1.0": "cpal-1.0", "ca-tosl1.1": "catosl-1.1", "nasa1.3": "nasa-1.3",
    "rpl1.5": "rpl-1.5", "apgl-v3": "agpl-3.0-only", "apache": "apache-1.0", "artistic-license-2.0": "artistic-2.0",
    "attribution": "aal", "bsd-license": "bsd-1-clause", "cuaoffice": "cua-opl-1.0", "canada-crown": "ogl-canada-2.0",
    "cddl1": "cddl-1.0", "cc-by-sa": "cc-by-sa-1.0", "cc-by": "cc-by-1.0", "cc-nc": "cc-by-nc-2.0",
    "eclipse-1.0": "epl-1.0", "ecl2": "ecl-2.0", "ver2_eiffel": "efl-2.0", "eiffel": "efl-1.0",
    "frameworx": "frameworx-1.0", "fal": "lal-1.2", "gfdl": "gfdl-1.1-only", "gpl-2.0": "gpl-2.0-only",
    "gpl-3.0": "gpl-3.0-only", "lgpl-2.1": "lgpl-2.1-only", "lgpl-3.0": "lgpl-3.0-only", "ibmpl": "ipl-1.0",
    "ipafont": "ipa", "isc-license": "isc", "intel-osl": "intel", "lucent1.02": "lpl-1.02", "mit-license": "mit",
    "mozilla": "mpl-1.0", "mozilla1.1": "mpl-1.1", "ntp-license": "ntp", "nethack": "ngpl", "nosl3.0": "nposl-3.0",
    "oclc2": "oclc-2.0", "odc-by": "odc-by-1.0", "odc-odbl": "odbl-1.0", "odc-pddl": "pddl-1.0",
    "openfont": "ofl-1.0", "opengroup": "ogtsl", "php": "php-3.0", "pythonsoftfoundation": "psf-2.0",
    "pythonpl": "python-2.0", "real": "rpsl-1.0", "ricohpl": "rscpl", "standardml-nj": "smlnj", "sun-issl": "sissl",
    "sunpublic": "spl-1.0", "sybase": "watcom-1.0", "uk-ogl": "ogl-uk-1.0", "uoi-ncsa": "ncsa", "vovidapl": "vsl-1.0",
    "zpl": "zpl-1.1", "zlib-license": "zlib",
}  # fmt: skip

# The Blue Oak Council's permissive licenses (every rating: model, gold, silver, bronze, lead), ids in lower case.
# "borceux" is Zenodo's spelling of the list's "Bourceux" (its URL is SPDX's Borceux).
BLUE_OAK = frozenset({
    "blue-oak-1.0.0", "blueoak-1.0.0", "bsd-2-clause-patent", "adsl", "apache-2.0", "apafml", "bsd-1-clause",
    "bsd-2-clause", "bsd-2-clause-freebsd", "bsd-2-clause-netbsd", "bsl-1.0", "dsdp", "ecl-1.0", "ecl-2.0",
    "imagemagick", "isc", "linux-openib", "mit", "ms-pl", "mup", "postgresql", "spencer-99", "upl-1.0", "xerox",
    "0bsd", "afl-1.1", "afl-1.2", "afl-2.0", "afl-2.1", "afl-3.0", "amdplpa", "aml", "ampas", "antlr-pd",
    "apache-1.0", "apache-1.1", "artistic-2.0", "bahyph", "barr", "bsd-3-clause", "bsd-3-clause-attribution",
    "bsd-3-clause-clear", "bsd-3-clause-lbnl", "bsd-3-clause-no-nuclear-license-2014",
    "bsd-3-clause-no-nuclear-warranty", "bsd-4-clause", "bsd-4-clause-uc", "bsd-source-code", "bzip2-1.0.5",
    "bzip2-1.0.6", "cc0-1.0", "cnri-jython", "cnri-python", "cnri-python-gpl-compatible", "cube", "curl", "egenix",
    "entessa", "ftl", "ibm-pibs", "icu", "info-zip", "intel", "jasper-2.0", "libpng", "libtiff", "lppl-1.3c",
    "mit-0", "mit-advertising", "mit-cmu", "mit-enna", "mit-feh", "mitnfa", "mtll", "multics", "naumen", "ncsa",
    "net-snmp", "netcdf", "ntp", "oldap-2.0", "oldap-2.0.1", "oldap-2.1", "oldap-2.2", "oldap-2.2.1", "oldap-2.2.2",
    "oldap-2.3", "oldap-2.4", "oldap-2.5", "oldap-2.6", "oldap-2.7", "oldap-2.8", "oml", "openssl", "php-3.0",
    "php-3.01", "plexus", "python-2.0", "ruby", "saxpath", "sgi-b-2.0", "smlnj", "swl", "tcl", "tcp-wrappers",
    "unicode-dfs-2015", "unicode-dfs-2016", "unlicense", "vsl-1.0", "w3c", "x11", "xfree86-1.1", "xnet", "xpp",
    "zlib", "zlib-acknowledgement", "zpl-2.0", "zpl-2.1",
    "aal", "adobe-2006", "afmparse", "artistic-1.0", "artistic-1.0-cl8", "artistic-1.0-perl", "beerware", "borceux",
    "cecill-b", "clartistic", "condor-1.1", "crossword", "crystalstacker", "diffmark", "doc", "efl-1.0", "efl-2.0",
    "fair", "giftware", "hpnd", "ijg", "leptonica", "lpl-1.0", "lpl-1.02", "miros", "mpich2", "nasa-1.3", "nbpl-1.0",
    "newsletr", "nlpl", "nrl", "ogtsl", "oldap-1.1", "oldap-1.2", "oldap-1.3", "oldap-1.4", "psutils", "qhull",
    "rdisc", "rsa-md", "spencer-86", "spencer-94", "tu-berlin-1.0", "tu-berlin-2.0", "w3c-19980720", "w3c-20150513",
    "wsuipa", "wtfpl", "xinetd", "zed", "zend-2.0", "zpl-1.1",
})  # fmt: skip

# Public domain and attribution only, for data and documents (not rated by Blue Oak): Zenodo's ids.
OPEN_CONTENT = frozenset({
    "cc-by-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-3.0-at", "cc-by-3.0-us", "cc-by-4.0", "cc-pddc",
    "pddl-1.0", "odc-by-1.0", "cdla-permissive-1.0", "other-pd", "other-at",
})  # fmt: skip

PERMISSIVE_IDS = BLUE_OAK | OPEN_CONTENT

# Share-alike licenses, by family prefix (every version, "-only" and "-or-later" alike) and one by one.
COPYLEFT_FAMILIES = ("gpl-", "lgpl-", "agpl-", "gfdl-", "mpl-", "epl-", "eupl-", "cddl-", "osl-", "cc-by-sa-",
                     "ofl-", "copyleft-next-", "cern-ohl-")
COPYLEFT = frozenset({
    "lgpllr", "cecill-1.0", "cecill-1.1", "cecill-2.0", "cecill-2.1", "cecill-c", "cpl-1.0", "cpal-1.0", "ipl-1.0",
    "ms-rl", "odbl-1.0", "cdla-sharing-1.0", "tapr-ohl-1.0", "sleepycat", "rpl-1.1", "rpl-1.5", "rpsl-1.0",
    "qpl-1.0", "sspl-1.0", "nposl-3.0", "ngpl", "apsl-2.0", "spl-1.0", "npl-1.0", "npl-1.1", "sissl", "sissl-1.2",
    "lal-1.2", "lal-1.3", "oset-pl-2.1", "liliq-r-1.1", "liliq-rplus-1.1", "erlpl-1.1",
})  # fmt: skip
# The permissive variant of a family that is otherwise share-alike. (mpl-2.0-no-copyleft-exception is MPL-2.0
# without its exception *to* the copyleft, "Incompatible With Secondary Licenses": copyleft still.)
NOT_COPYLEFT = frozenset({"cern-ohl-p-2.0"})

# Kaggle's name (publish.KAGGLE_LICENSES) for the Zenodo ids that Kaggle knows, to the letter or as a version
# Kaggle's label covers ("GPL-3.0" for gpl-3.0-only and gpl-3.0-or-later alike).
KAGGLE_NAMES: Mapping[str, str] = {
    "cc0-1.0": "CC0-1.0", "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-4.0": "CC-BY-SA-4.0", "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc-by-nc-sa-4.0": "CC-BY-NC-SA-4.0", "cc-by-nd-4.0": "CC-BY-ND-4.0", "cc-by-nc-nd-4.0": "CC-BY-NC-ND-4.0",
    "cc-by-3.0": "CC-BY-3.0", "cc-by-sa-3.0": "CC-BY-SA-3.0", "pddl-1.0": "PDDL", "odc-by-1.0": "ODC-BY-1.0",
    "odbl-1.0": "ODbL-1.0", "cdla-permissive-1.0": "CDLA-Permissive-1.0", "cdla-sharing-1.0": "CDLA-Sharing-1.0",
    "gpl-2.0-only": "GPL-2.0", "gpl-2.0-or-later": "GPL-2.0", "gpl-3.0-only": "GPL-3.0", "gpl-3.0-or-later": "GPL-3.0",
    "lgpl-3.0-only": "LGPL-3.0", "lgpl-3.0-or-later": "LGPL-3.0", "agpl-3.0-only": "AGPL-3.0",
    "agpl-3.0-or-later": "AGPL-3.0", "gfdl-1.3-only": "FDL-1.3", "gfdl-1.3-or-later": "FDL-1.3",
    "apache-2.0": "apache-2.0",
}  # fmt: skip
KAGGLE_OTHER = "other"  # Kaggle's "Other (specified in description)"
KAGGLE_UNKNOWN = "unknown"  # Kaggle's "Unknown"


# --- reading a record's license ------------------------------------------------------------------------------


def record_license(record: Any) -> str | None:
    """The license id of a record (a search hit, or its ``metadata``) as Zenodo gives it, in lower case.

    ``None`` when the record has no license; :data:`UNREADABLE` when it has one without a usable id (a custom
    license, a value of the wrong type or with characters no id has). Never raises: the record is untrusted.
    """
    if not isinstance(record, Mapping):
        return None
    metadata = record.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = record  # given the metadata itself
    if "rights" in metadata and metadata.get("rights"):
        rights = metadata["rights"]
        first = rights[0] if isinstance(rights, list) else None  # a list of {"id", "title", ...}; else unreadable
        return _license_id(first.get("id") if isinstance(first, Mapping) else None, present=True)
    value = metadata.get("license")
    if isinstance(value, Mapping):
        return _license_id(value.get("id"), present=bool(value))
    return _license_id(value, present=value is not None and value != "")


def _license_id(value: Any, *, present: bool) -> str | None:
    """A valid id in lower case; :data:`UNREADABLE` for something else where a license is ``present``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if LICENSE_ID.fullmatch(text):
            return text
    return UNREADABLE if present else None


def canonical_id(license_id: str) -> str:
    """Today's Zenodo id of a (lower-case) legacy one, else the id itself: ``gpl-3.0`` -> ``gpl-3.0-only``."""
    return LEGACY_IDS.get(license_id, license_id)


def license_category(license_id: str | None) -> str:
    """``permissive``, ``copyleft``, ``other`` or ``none`` (no license): see the module's docstring."""
    if license_id is None:
        return NONE
    key = canonical_id(license_id.strip().lower())
    if key == NOT_SPECIFIED:
        return NONE
    if key in PERMISSIVE_IDS or key in NOT_COPYLEFT:
        return PERMISSIVE
    if key in COPYLEFT or key.startswith(COPYLEFT_FAMILIES):
        return COPYLEFT_CATEGORY
    return OTHER


def check_categories(categories: Any) -> tuple[str, ...]:
    """The categories given (a list, or a comma-separated string), each once, in :data:`CATEGORIES` order.

    Raises ``ValueError`` naming what is wrong: callers turn it into their one-line error.
    """
    items = categories.split(",") if isinstance(categories, str) else list(categories)
    wanted = {str(item).strip() for item in items} - {""}
    unknown = sorted(wanted - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown license categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}: "
                         f"use {', '.join(CATEGORIES)}")
    if not wanted:
        raise ValueError(f"no license category given: name at least one of {', '.join(CATEGORIES)}")
    return tuple(c for c in CATEGORIES if c in wanted)


# --- what the vocabulary says about an id --------------------------------------------------------------------


@functools.cache
def vocabulary() -> dict[str, tuple[str, str]]:
    """Zenodo's license vocabulary: id -> (title, URL; "" when it has none). Read once from ``licenses.csv``."""
    text = resources.files("zenodo_hpc.core").joinpath("licenses.csv").read_text(encoding="utf-8")
    return {row["id"]: (row["title"], row["url"]) for row in csv.DictReader(io.StringIO(text))}


def license_title(license_id: str) -> str:
    """The title Zenodo gives the license (``MIT License``), or the id itself when Zenodo has none."""
    if license_id == UNREADABLE:
        return "a license without a readable id (custom, or malformed)"
    found = vocabulary().get(canonical_id(license_id))
    return found[0] if found else license_id


def frictionless_license(license_id: str) -> dict[str, str]:
    """The license as a Frictionless data package lists it: ``name`` (the id), ``title``, ``path`` (when known)."""
    found = vocabulary().get(canonical_id(license_id))
    entry = {"name": license_id, "title": license_title(license_id)}
    if found and found[1]:
        entry["path"] = found[1]
    return entry


def kaggle_license(license_ids: set[str | None]) -> str:
    """Kaggle's one license for records with these licenses (``None``: no license): the records' own license when
    they all share one that Kaggle knows; ``unknown`` when none has a license; ``other`` (Kaggle: "specified in
    description") else."""
    if len(license_ids) == 1:
        (only,) = license_ids
        if only is None or canonical_id(only) == NOT_SPECIFIED:
            return KAGGLE_UNKNOWN
        return KAGGLE_NAMES.get(canonical_id(only), KAGGLE_OTHER)
    if all(i is None or canonical_id(i) == NOT_SPECIFIED for i in license_ids):
        return KAGGLE_UNKNOWN
    return KAGGLE_OTHER
