"""franz-go v1.22.3's own share-group (KIP-932) and KIP-848 integration tests, from its
module, against a fresh sluice (issue #22: they must run, not skip).

franz-go runs its share tests only against a broker whose ApiVersions offers ShareFetch v2 and
ShareAcknowledge v2 (Kafka 4.2+: KIP-1206 acquire modes, KIP-1222 renew acknowledgements);
below that they SKIP, which is how they went unnoticed. This builds the module's pkg/kgo test
binary and runs TestShareGroup, TestShareGroupETL (records through two share groups with
accept/release/reject strategies), TestShareGroupAckOnClose, TestShareGroupOffsetsAdmin,
TestConsumeRegexShareSkipsInternal, Test848RegexBrokerResolves and TestGroupSimple, and
asserts each PASSES and none SKIP. The same command passed against Apache Kafka 4.4 by hand
(see the issue's report).

Needs the Go toolchain (the module comes from the Go module cache, downloaded through the Go
module proxy if missing); skipped without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support import run

FRANZ = "github.com/twmb/franz-go@v1.22.3"
TESTS = ["TestShareGroup", "TestShareGroupETL", "TestShareGroupAckOnClose", "TestShareGroupOffsetsAdmin",
         "TestConsumeRegexShareSkipsInternal", "Test848RegexBrokerResolves", "TestGroupSimple"]
# Records of TestShareGroupETL (its default is 500,000): enough for its reject-below-100 keys and
# release strategies, seconds on sluice.
ETL_RECORDS = 3000


def kgo_dir() -> Path:
    """pkg/kgo of franz-go v1.22.3 in the module cache (downloaded if missing)."""
    cache = run(["go", "env", "GOMODCACHE"], timeout=30).stdout.decode().strip()
    path = Path(cache) / "github.com" / "twmb" / FRANZ.split("/")[-1] / "pkg" / "kgo"
    if not path.is_dir():
        r = run(["go", "mod", "download", FRANZ], timeout=300)
        assert r.returncode == 0, f"go mod download {FRANZ} failed:\n{r.stderr.decode()[-2000:]}"
    assert path.is_dir(), path
    return path


@pytest.fixture(scope="module")
def kgo_tests(tmp_path_factory) -> tuple:
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    src = kgo_dir()
    out = tmp_path_factory.mktemp("franz") / "kgo.test"
    r = in_dir(["go", "test", "-c", "-o", str(out), "./"], 900, src)
    assert r.returncode == 0, f"go test -c failed:\n{r.stderr.decode()[-3000:]}"
    return src, out


def in_dir(cmd: list, timeout: float, cwd: Path, env=None) -> subprocess.CompletedProcess:
    """`support.run` in a directory (the module's tests read nothing relative, but go test -c
    must run in the package)."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          timeout=timeout, cwd=cwd, env=env)


def outcomes(output: str) -> dict:
    """Test name -> PASS/FAIL/SKIP, from `go test -v` output (top-level tests only)."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^--- (PASS|FAIL|SKIP): (\w+) ", output, re.M)}


def test_franz_go_share_and_848_tests_pass_on_sluice(broker, kgo_tests):
    src, binary = kgo_tests
    env = dict(os.environ, KGO_SEEDS=broker.bootstrap, KGO_TEST_RF="1", KGO_TEST_RECORDS=str(ETL_RECORDS))
    pattern = "^(" + "|".join(TESTS) + ")$"
    r = in_dir([str(binary), "-test.v", "-test.count=1", "-test.run", pattern, "-test.timeout", "170s"],
               200, src, env)
    out = r.stdout.decode(errors="replace")
    got = outcomes(out)
    print("\n".join(ln for ln in out.splitlines() if "--- " in ln))
    tail = f"exit {r.returncode}\n{out[-6000:]}\n{r.stderr.decode(errors='replace')[-2000:]}"
    assert got == {t: "PASS" for t in TESTS}, f"{got}\n{tail}\n--- broker ---\n{broker.stderr_tail()}"
    # Nor a subtest (TestGroupSimple/848 skips without KIP-848).
    assert "--- SKIP" not in out, tail
    assert r.returncode == 0, tail
    assert broker.alive()
