"""The host API agrees with its own OpenAPI document (schemathesis, issue 12).

Schemathesis reads ``/api/v1/openapi.json`` from the bridge running under
gunicorn against the Mattermost stand-in, generates requests from it (valid
ones, and ones that break a stated limit), sends them, and checks every
answer against the document with all of its checks: a valid request refused,
an invalid one accepted, an undeclared status, a body off its schema, a 405
without ``Allow``, a route that ignores the key, a created conversation that
cannot be read back. An operation is covered as soon as it is in the
document: nothing here names one.

Fixed seed and bounded examples: the same inputs on every run, and seconds,
not minutes. tests/test_openapi.py pins the edges found only by luck here.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.file_samples import FILE_SAMPLES

from bridge.uploads import EXTENSIONS
from tests.conftest import configure_env

pytestmark = pytest.mark.integration

# A file part declares the types it accepts (encoding.contentType); the API judges
# a file by its content, so a valid one is a real file of such a type. Schemathesis
# has the smallest well-formed file of each; it is told to send those.
for _media_type in EXTENSIONS:
    schemathesis.openapi.media_type(_media_type, st.just(FILE_SAMPLES[EXTENSIONS[_media_type]]))

SEED = 20261203
MAX_EXAMPLES = 25  # fuzzing cases per operation; the coverage phase adds its own
STATEFUL_SCENARIOS = 15


@pytest.fixture(scope="module")
def api_schema(live, mm):
    """The document as the bridge serves it, with an API key of an active environment."""
    key = configure_env(live, mm)
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {key}"},
            "request-timeout": 30,
            # No example database: a failure found once must not change later runs.
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 6},
            },
            "checks": {"enabled": True},
        }
    )
    return schemathesis.openapi.from_url(
        f"{live.url}/api/v1/openapi.json", config=config, timeout=10
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    """schemathesis 4.32's from_fixture reads ``item._nodeid``, gone since pytest 9.2."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@settings(deadline=None)
def test_every_operation_answers_as_its_document_says(case):
    case.call_and_validate()


def test_call_sequences_answer_as_the_document_says(api_schema):
    """Start a conversation, then read it, add to it and page its messages (the links)."""
    api_schema.as_state_machine().run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,
        )
    )
