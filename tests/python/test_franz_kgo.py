"""franz-go's own integration tests (`pkg/kgo` of franz-go v1.22.3, from the Go module proxy)
against a fresh sluice broker, as franz-go's CI runs them against Apache Kafka.

Contract: the whole `pkg/kgo` test binary runs with KGO_SEEDS pointing at sluice
(KGO_TEST_RF=1, KGO_TEST_RECORDS bounded so the run stays near two minutes). Every test must
pass, and none may skip except those that skip on Apache Kafka 4.4 as well (SCRAM and
OAUTHBEARER listeners given through their own variables; a broker not listing Produce v2). franz-go skips a test when
the broker lacks a feature (KIP-848 consumer groups, static membership, share groups with
ShareFetch/ShareAcknowledge v2): such a skip fails here, because on Apache Kafka 4.4 the same
tests run. A second test runs the tests that count offsets from 0 against three brokers with
RF 3 (`cluster_support`). Skipped when Go is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from cluster_support import make_cluster
from support import REPO, run

GO_DIR = REPO / "tests" / "compat" / "go"
FRANZ = "github.com/twmb/franz-go@v1.22.3"
# Skipped on Apache Kafka 4.4 too: the tests that need a listener this test does not set up
# (their own env variables), and the one for brokers that do not list Produce v2 (Kafka 4.x and
# sluice list it: KAFKA-18659).
EXPECTED_SKIPS = {"TestSCRAMAuth", "TestSCRAMAuthBadCredentials", "TestOAuthAuth",
                  "TestIssueProduceBrokerTooOldFailsRecords"}
RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+)", re.M)


def franz_dir() -> str:
    """The module's directory in the Go module cache (downloaded through the proxy once)."""
    r = run(["go", "mod", "download", "-json", FRANZ], timeout=600)
    assert r.returncode == 0, f"go mod download failed:\n{r.stdout.decode()[-2000:]}{r.stderr.decode()[-2000:]}"
    m = re.search(r'"Dir":\s*"([^"]+)"', r.stdout.decode())
    assert m, r.stdout.decode()[-2000:]
    return m.group(1)


def run_kgo(seeds: str, rf: int, records: int, tmp_path, only: str = "") -> tuple:
    """Runs franz-go's `pkg/kgo` tests (those matching `only`, all when empty) against `seeds`;
    returns (exit code, {test: statuses}, output)."""
    kgo = os.path.join(franz_dir(), "pkg", "kgo")
    env = dict(os.environ, KGO_SEEDS=seeds, KGO_TEST_RF=str(rf), KGO_TEST_RECORDS=str(records),
               GOFLAGS="-mod=mod")
    cmd = ["go", "test", "-count=1", "-v", "-timeout", "540s"] + (["-run", only] if only else []) + ["."]
    # `go test` compiles into Go's build cache; the module directory itself stays read-only.
    p = subprocess.run(cmd, cwd=kgo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = p.stdout.decode(errors="replace")
    (tmp_path / f"kgo-rf{rf}.log").write_text(out)
    results = {}
    for status, name in RESULT.findall(out):
        results.setdefault(name.split("/")[0], set()).add(status)
    return p.returncode, results, out


def test_franz_go_kgo_integration_suite_passes_with_nothing_skipped(broker_factory, tmp_path):
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    b = broker_factory.start(cores=2)
    code, results, out = run_kgo(b.bootstrap, 1, 20000, tmp_path)
    failed = sorted(n for n, s in results.items() if "FAIL" in s)
    skipped = sorted(n for n, s in results.items() if s == {"SKIP"} and n not in EXPECTED_SKIPS)
    tail = f"\n{out[-4000:]}\n--- broker ---\n{b.stderr_tail()}"
    assert code == 0 and not failed, f"exit {code}, failed {failed}{tail}"
    assert not skipped, f"skipped on sluice (they run on Kafka 4.4): {skipped}{tail}"
    for name in ("TestGroupETL", "TestTxnEtl", "Test848RegexBrokerResolves", "TestShareGroupETL"):
        assert results.get(name) == {"PASS"}, f"{name}: {results.get(name)}{tail}"
    assert b.alive()


# The tests that count offsets from 0 on new partitions (Kafka's offsets on replicated
# partitions: a leader's Raft entries take none), run with RF 3 on three brokers.
RF3_TESTS = ("TestGroupETL", "TestConsumeMaxDecompressBatchBytes", "TestAddRemovePartitions", "TestTxnEtl")


def test_franz_go_offset_tests_pass_on_three_brokers_rf3(tmp_path):
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    c = make_cluster("sluice", tmp_path / "cluster")
    try:
        c.start()
        code, results, out = run_kgo(c.bootstrap, 3, 5000, tmp_path, "^(" + "|".join(RF3_TESTS) + ")$")
        tail = "\n" + out[-4000:] + "".join(f"\n--- node {i} ---\n{c.log_tail(i, 30)}" for i in c.ids)
        assert code == 0, f"exit {code}{tail}"
        for name in RF3_TESTS:
            assert results.get(name) == {"PASS"}, f"{name}: {results.get(name)}{tail}"
        assert not c.crashed(), tail
    finally:
        c.stop_all()
