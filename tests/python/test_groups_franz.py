"""franz-go consumer groups of static members with the cooperative-sticky
balancer (tests/compat/go/staticcoop), the case of franz-go's TestGroupETL
"cooperative-sticky/static": members join in waves and some quit, so members
give up partitions and rejoin with their member id and new metadata.  Kafka
rebalances on such a rejoin; a broker that answers it with the current
generation leaves partitions owned by nobody and the run never finishes.

Needs the Go toolchain (the module's dependencies come from the Go module
proxy, cached); skipped without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import REPO, run

GO_DIR = REPO / "tests" / "compat" / "go"


@pytest.fixture(scope="module")
def staticcoop(tmp_path_factory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    out = tmp_path_factory.mktemp("go") / "staticcoop"
    r = run(["go", "build", "-C", str(GO_DIR), "-o", str(out), "./staticcoop"], timeout=600)
    assert r.returncode == 0, f"go build failed:\n{r.stderr.decode()[-3000:]}"
    return out


@pytest.mark.parametrize("initial_delay_ms", [0, 3000])
def test_franz_static_cooperative_sticky_members_come_and_go(broker_factory, tmp_path, staticcoop,
                                                             initial_delay_ms):
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(f"group_initial_rebalance_delay_ms = {initial_delay_ms}\n")
    b = broker_factory.start(config=cfg)
    r = run([str(staticcoop), "-bootstrap", b.bootstrap, "-partitions", "11", "-records", "20000",
             "-timeout", "120s"], timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0 and "staticcoop: PASS" in out, \
        f"exit {r.returncode}\n{out[-2000:]}\n{r.stderr.decode()[-3000:]}\n--- broker ---\n{b.stderr_tail()}"
    assert b.alive()
