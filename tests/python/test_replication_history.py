"""Contract: the history checker of the replication tests (history_check.py) catches each kind
of violation it claims to — lost acknowledged write, acknowledged offset holding another record,
duplicate, reordering, one offset read as two records, a never-committed record surviving — and
passes a consistent history. No broker: histories are built by hand."""

from history_check import History, Value


def v(p, s, producer="p"):
    return Value.make(producer, p, s)


def consistent():
    h = History()
    final = {0: [], 1: []}
    for p in (0, 1):
        for s in range(5):
            h.acked(p, s, f"k{s}".encode(), v(p, s))
            h.read("consumer", p, s, f"k{s}".encode(), v(p, s))
            final[p].append((s, f"k{s}".encode(), v(p, s)))
    return h, final


def test_consistent_history_passes():
    h, final = consistent()
    assert h.check(final) == []


def test_lost_acknowledged_write():
    h, final = consistent()
    final[1] = final[1][:3]
    errs = h.check(final)
    assert any("acknowledged 1/3" in e and "missing" in e for e in errs), errs
    assert any("acknowledged 1/4" in e for e in errs), errs


def test_acknowledged_offset_replaced():
    h, final = consistent()
    final[0][2] = (2, b"k9", v(0, 9, "other"))
    errs = h.check(final)
    assert any("acknowledged 0/2" in e and "replaced" in e for e in errs), errs


def test_duplicate_value():
    h, final = consistent()
    final[0].append((5, b"k4", v(0, 4)))
    errs = h.check(final)
    assert any("at 0/4 and at" in e or "at 0/5 and at" in e for e in errs), errs


def test_reordered_sequences():
    h = History()
    final = {0: [(0, b"k1", v(0, 1)), (1, b"k0", v(0, 0))]}
    errs = h.check(final)
    assert any(e.startswith("order:") for e in errs), errs


def test_offset_read_as_two_records():
    h, final = consistent()
    h.read("cut-leader", 0, 4, b"x", b"uncommitted")
    errs = h.check(final)
    assert any("offset 0/4 read as" in e for e in errs), errs


def test_reader_going_back_within_a_session():
    h, final = consistent()
    h.read("consumer", 0, 2, b"k2", v(0, 2))
    assert any("consumer read 0/2 after 0/4" in e for e in h.check(final))
    h2, final2 = consistent()
    h2.new_session("consumer")
    h2.read("consumer", 0, 2, b"k2", v(0, 2))
    assert h2.check(final2) == []


def test_never_committed_record_survives():
    h, final = consistent()
    cut = Value.make("cut", 0, 0)
    h.mark_never_committed(cut)
    assert h.check(final) == []
    final[0].append((5, b"cut", cut))
    errs = h.check(final)
    assert any("never acknowledged" in e for e in errs), errs


def test_acknowledged_without_offset_checked_by_value():
    h, final = consistent()
    h.acked(1, None, b"k5", v(1, 5))
    errs = h.check(final)
    assert any("without offset" in e and "missing" in e for e in errs), errs
    final[1].append((5, b"k5", v(1, 5)))
    assert h.check(final) == []
