"""franz-go's own integration tests (`pkg/kgo` of franz-go v1.22.3, from the Go module proxy)
against a fresh sluice broker, as franz-go's CI runs them against Apache Kafka.

Contract: the whole `pkg/kgo` test binary runs with KGO_SEEDS pointing at sluice
(KGO_TEST_RF=1, KGO_TEST_RECORDS bounded so the run stays near two minutes). Every test must
pass, and none may skip except those that need a broker set up in a way this test does not
(SCRAM and OAUTHBEARER listeners given through their own variables). franz-go skips a test when
the broker lacks a feature (KIP-848 consumer groups, static membership, share groups with
ShareFetch/ShareAcknowledge v2): such a skip fails here, because on Apache Kafka 4.4 the same
tests run. Skipped when Go is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from support import REPO, run

GO_DIR = REPO / "tests" / "compat" / "go"
FRANZ = "github.com/twmb/franz-go@v1.22.3"
# The tests that need a broker listener this test does not set up (their own env variables).
EXPECTED_SKIPS = {"TestSCRAMAuth", "TestSCRAMAuthBadCredentials", "TestOAuthAuth"}
RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+)", re.M)


def franz_dir() -> str:
    """The module's directory in the Go module cache (downloaded through the proxy once)."""
    r = run(["go", "mod", "download", "-json", FRANZ], timeout=600)
    assert r.returncode == 0, f"go mod download failed:\n{r.stdout.decode()[-2000:]}{r.stderr.decode()[-2000:]}"
    m = re.search(r'"Dir":\s*"([^"]+)"', r.stdout.decode())
    assert m, r.stdout.decode()[-2000:]
    return m.group(1)


def test_franz_go_kgo_integration_suite_passes_with_nothing_skipped(broker_factory, tmp_path):
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    kgo = os.path.join(franz_dir(), "pkg", "kgo")
    b = broker_factory.start(cores=2)
    env = dict(os.environ, KGO_SEEDS=b.bootstrap, KGO_TEST_RF="1", KGO_TEST_RECORDS="20000", GOFLAGS="-mod=mod")
    # `go test` compiles into Go's build cache; the module directory itself stays read-only.
    p = subprocess.run(["go", "test", "-count=1", "-v", "-timeout", "540s", "."], cwd=kgo, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = p.stdout.decode(errors="replace")
    (tmp_path / "kgo.log").write_text(out)
    results = {}
    for status, name in RESULT.findall(out):
        results.setdefault(name.split("/")[0], set()).add(status)
    failed = sorted(n for n, s in results.items() if "FAIL" in s)
    skipped = sorted(n for n, s in results.items() if s == {"SKIP"} and n not in EXPECTED_SKIPS)
    tail = f"\n{out[-4000:]}\n--- broker ---\n{b.stderr_tail()}"
    assert p.returncode == 0 and not failed, f"exit {p.returncode}, failed {failed}{tail}"
    assert not skipped, f"skipped on sluice (they run on Kafka 4.4): {skipped}{tail}"
    for name in ("TestGroupETL", "TestTxnEtl", "Test848RegexBrokerResolves", "TestShareGroupETL"):
        assert results.get(name) == {"PASS"}, f"{name}: {results.get(name)}{tail}"
    assert b.alive()
