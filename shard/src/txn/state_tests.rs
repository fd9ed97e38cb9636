//! Unit and property tests of the transaction state machine.

use super::*;
use proptest::prelude::*;

const MAX_TIMEOUT: i32 = 900_000;

fn init_input(id: &str, given: Option<(i64, i16)>, new_pid: i64, now: i64) -> InitInput<'_> {
    InitInput {
        transactional_id: id,
        timeout_ms: 60_000,
        given,
        new_producer_id: new_pid,
        now_ms: now,
        max_timeout_ms: MAX_TIMEOUT,
    }
}

fn apply_init(
    txns: &mut Txns,
    id: &str,
    given: Option<(i64, i16)>,
    new_pid: i64,
    now: i64,
) -> Result<InitStep, TxnError> {
    let step = init(txns, &init_input(id, given, new_pid, now))?;
    let (InitStep::Write(c) | InitStep::AbortFirst(c)) = &step;
    install(txns, c.clone(), false);
    Ok(step)
}

fn tp(t: &str, p: i32) -> (String, i32) {
    (t.to_string(), p)
}

fn write(txns: &mut Txns, c: Option<Change>) {
    if let Some(c) = c {
        install(txns, c, false);
    }
}

/// AddPartitionsToTxn of a version 1 client.
fn add1(
    txns: &Txns,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    group: Option<&str>,
    now: i64,
) -> Result<Option<Change>, TxnError> {
    add(txns, id, pid, epoch, partitions, group, false, now)
}

fn end_input(pid: i64, epoch: i16, commit: bool, tv2: bool, new_pid: i64, now: i64) -> EndInput {
    EndInput { producer_id: pid, epoch, commit, tv2, new_producer_id: new_pid, now_ms: now }
}

/// EndTxn of a version 1 client.
fn end1(txns: &Txns, id: &str, pid: i64, epoch: i16, commit: bool, now: i64) -> Result<EndStep, TxnError> {
    end(txns, id, &end_input(pid, epoch, commit, false, -1, now))
}

/// Runs EndTxn to completion (prepare, markers assumed written, complete): the producer id and
/// epoch the client goes on with.
fn finish_with(txns: &mut Txns, id: &str, input: &EndInput) -> Result<(i64, i16), TxnError> {
    match end(txns, id, input)? {
        EndStep::AlreadyDone => {}
        EndStep::Prepare(c) => {
            let done = complete(&c.meta, input.now_ms);
            let answered = next_producer(&c.meta);
            install(txns, c.clone(), false);
            install(txns, Change { transactional_id: id.into(), meta: done }, false);
            // EndTxn is answered at the Prepare state: the answer is what completing installs.
            assert_eq!(answered, (txns[id].producer_id, txns[id].producer_epoch));
        }
    }
    Ok((txns[id].producer_id, txns[id].producer_epoch))
}

fn finish(txns: &mut Txns, id: &str, pid: i64, epoch: i16, commit: bool, now: i64) -> Result<(), TxnError> {
    finish_with(txns, id, &end_input(pid, epoch, commit, false, -1, now)).map(|_| ())
}

#[test]
fn first_init_gives_epoch_zero_then_bumps() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    assert_eq!((t["a"].producer_id, t["a"].producer_epoch, t["a"].state), (7, 0, TxnState::Empty));
    apply_init(&mut t, "a", None, 8, 1).unwrap();
    assert_eq!((t["a"].producer_id, t["a"].producer_epoch), (7, 1), "same id, epoch bumped");
}

#[test]
fn commit_walks_the_states() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let c = add1(&t, "a", 7, 0, &[tp("x", 0)], None, 10).unwrap();
    write(&mut t, c);
    assert_eq!(t["a"].state, TxnState::Ongoing);
    assert_eq!(t["a"].start_ms, 10);
    // Adding the same partition again changes nothing.
    assert_eq!(add1(&t, "a", 7, 0, &[tp("x", 0)], None, 11).unwrap(), None);
    let EndStep::Prepare(p) = end1(&t, "a", 7, 0, true, 12).unwrap() else { panic!("prepare expected") };
    assert_eq!(p.meta.state, TxnState::PrepareCommit);
    install(&mut t, p.clone(), false);
    // While markers are in flight: retries and new adds must wait.
    assert_eq!(end1(&t, "a", 7, 0, true, 13), Err(TxnError::ConcurrentTransactions));
    assert_eq!(add1(&t, "a", 7, 0, &[tp("x", 1)], None, 13), Err(TxnError::ConcurrentTransactions));
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&p.meta, 14) }, false);
    assert_eq!(t["a"].state, TxnState::CompleteCommit);
    assert!(t["a"].partitions.is_empty());
    // A retried commit succeeds; an abort now is a state error.
    assert_eq!(end1(&t, "a", 7, 0, true, 15), Ok(EndStep::AlreadyDone));
    assert!(matches!(end1(&t, "a", 7, 0, false, 15), Err(TxnError::InvalidTxnState(_))));
    // The next transaction starts from CompleteCommit.
    let c = add1(&t, "a", 7, 0, &[tp("y", 0)], None, 20).unwrap();
    write(&mut t, c);
    assert_eq!(t["a"].partitions.iter().cloned().collect::<Vec<_>>(), vec![tp("y", 0)]);
}

#[test]
fn end_without_a_transaction_is_a_state_error() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    assert!(matches!(end1(&t, "a", 7, 0, true, 1), Err(TxnError::InvalidTxnState(_))));
}

#[test]
fn a_second_init_fences_the_first_producer() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let c = add1(&t, "a", 7, 0, &[tp("x", 0)], None, 1).unwrap();
    write(&mut t, c);
    // The new instance finds an open transaction: it is aborted with the epoch bumped first.
    let step = apply_init(&mut t, "a", None, 99, 2).unwrap();
    let InitStep::AbortFirst(c) = step else { panic!("abort expected") };
    assert_eq!((c.meta.state, c.meta.producer_epoch), (TxnState::PrepareAbort, 1));
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&c.meta, 3) }, false);
    // The retry gets a bumped epoch again.
    apply_init(&mut t, "a", None, 99, 4).unwrap();
    assert_eq!((t["a"].producer_id, t["a"].producer_epoch, t["a"].state), (7, 2, TxnState::Empty));
    // The old producer (epoch 0) is fenced everywhere.
    assert_eq!(add1(&t, "a", 7, 0, &[tp("x", 0)], None, 5), Err(TxnError::ProducerFenced));
    assert_eq!(end1(&t, "a", 7, 0, true, 5), Err(TxnError::ProducerFenced));
    assert_eq!(add1(&t, "a", 8, 2, &[tp("x", 0)], None, 5), Err(TxnError::InvalidProducerIdMapping));
}

#[test]
fn kip_360_recovery_with_the_current_epoch_bumps_and_zombies_are_fenced() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    apply_init(&mut t, "a", Some((7, 0)), 99, 1).unwrap();
    assert_eq!(t["a"].producer_epoch, 1);
    // A retry of that same call (it still presents epoch 0) is answered the same.
    apply_init(&mut t, "a", Some((7, 0)), 99, 2).unwrap();
    assert_eq!(t["a"].producer_epoch, 1);
    // A wrong id or an older epoch is a zombie.
    assert_eq!(init(&t, &init_input("a", Some((8, 1)), 99, 3)), Err(TxnError::ProducerFenced));
    apply_init(&mut t, "a", Some((7, 1)), 99, 3).unwrap();
    assert_eq!(init(&t, &init_input("a", Some((7, 0)), 99, 4)), Err(TxnError::ProducerFenced));
}

#[test]
fn exhausted_epoch_takes_a_new_producer_id() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    t.get_mut("a").unwrap().producer_epoch = i16::MAX - 1;
    apply_init(&mut t, "a", None, 42, 1).unwrap();
    assert_eq!((t["a"].producer_id, t["a"].producer_epoch), (42, 0));
}

#[test]
fn timeouts_abort_and_fence() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let c = add1(&t, "a", 7, 0, &[tp("x", 0)], None, 1_000).unwrap();
    write(&mut t, c);
    assert!(timed_out(&t, 61_000).is_empty(), "not past the 60 s timeout yet");
    let due = timed_out(&t, 61_001);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].meta.state, due[0].meta.producer_epoch), (TxnState::PrepareAbort, 1));
    install(&mut t, due[0].clone(), false);
    assert_eq!(pending_completion(&t).len(), 1);
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&due[0].meta, 61_002) }, false);
    assert_eq!(t["a"].state, TxnState::CompleteAbort);
    assert_eq!(end1(&t, "a", 7, 0, true, 61_003), Err(TxnError::ProducerFenced));
}

#[test]
fn invalid_timeouts_are_refused() {
    let t = Txns::new();
    let mut input = init_input("a", None, 1, 0);
    input.timeout_ms = MAX_TIMEOUT + 1;
    assert_eq!(init(&t, &input), Err(TxnError::InvalidTransactionTimeout(MAX_TIMEOUT + 1)));
    input.timeout_ms = 0;
    assert_eq!(init(&t, &input), Err(TxnError::InvalidTransactionTimeout(0)));
}

#[test]
fn idle_ids_expire_but_open_transactions_do_not() {
    let mut t = Txns::new();
    apply_init(&mut t, "idle", None, 1, 0).unwrap();
    apply_init(&mut t, "open", None, 2, 0).unwrap();
    let c = add1(&t, "open", 2, 0, &[tp("x", 0)], None, 0).unwrap();
    write(&mut t, c);
    assert!(expired(&t, 999, 1_000).is_empty());
    assert_eq!(expired(&t, 1_000, 1_000), vec!["idle".to_string()]);
}

#[test]
#[should_panic(expected = "may not become")]
fn illegal_transitions_are_caught() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let mut m = t["a"].clone();
    m.state = TxnState::CompleteCommit;
    install(&mut t, Change { transactional_id: "a".into(), meta: m }, false);
}

#[derive(Debug, Clone)]
enum Op {
    Init { fresh_instance: bool },
    Add(i32),
    End(bool),
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|f| Op::Init { fresh_instance: f }),
        (0..4i32).prop_map(Op::Add),
        any::<bool>().prop_map(Op::End),
        (0..120_000i64).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever the producers do, the table only moves along allowed transitions (`install`
    /// asserts it), the epoch never decreases for a producer id, an answered producer is
    /// never older than the table's, and an Ongoing transaction always has partitions.
    #[test]
    fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut t = Txns::new();
        let mut now = 0i64;
        let mut client: Option<(i64, i16)> = None;
        let mut next_pid = 100i64;
        for o in ops {
            now += 1;
            let before = t.get("a").map(|m| (m.producer_id, m.producer_epoch));
            match o {
                Op::Init { fresh_instance } => {
                    let given = if fresh_instance { None } else { client };
                    next_pid += 1;
                    match apply_init(&mut t, "a", given, next_pid, now) {
                        Ok(InitStep::Write(c)) => client = Some((c.meta.producer_id, c.meta.producer_epoch)),
                        Ok(InitStep::AbortFirst(c)) => {
                            let done = complete(&c.meta, now);
                            install(&mut t, Change { transactional_id: "a".into(), meta: done }, false);
                        }
                        Err(_) => {}
                    }
                }
                Op::Add(p) => if let Some((pid, e)) = client {
                    if let Ok(c) = add1(&t, "a", pid, e, &[tp("x", p)], None, now) { write(&mut t, c); }
                },
                Op::End(commit) => if let Some((pid, e)) = client {
                    let _ = finish(&mut t, "a", pid, e, commit, now);
                },
                Op::Tick(d) => {
                    now += d;
                    for c in timed_out(&t, now) {
                        let done = complete(&c.meta, now);
                        install(&mut t, c, false);
                        install(&mut t, Change { transactional_id: "a".into(), meta: done }, false);
                    }
                }
            }
            if let (Some((pid0, e0)), Some(m)) = (before, t.get("a")) {
                if m.producer_id == pid0 { prop_assert!(m.producer_epoch >= e0); }
            }
            if let Some(m) = t.get("a") {
                prop_assert_eq!(m.state == TxnState::Ongoing, !m.partitions.is_empty());
                prop_assert!(!m.state.is_prepare(), "every prepare was completed");
                if let Some((pid, e)) = client {
                    if pid == m.producer_id { prop_assert!(e <= m.producer_epoch); }
                }
            }
        }
    }
}

#[test]
fn verify_answers_membership_without_changing_anything() {
    let mut txns = Txns::new();
    let input = InitInput {
        transactional_id: "t",
        timeout_ms: 1000,
        given: None,
        new_producer_id: 7,
        now_ms: 0,
        max_timeout_ms: 60_000,
    };
    let InitStep::Write(c) = init(&txns, &input).expect("init") else { panic!("a new id is written") };
    install(&mut txns, c, false);
    let a = ("a".to_string(), 0);
    let b = ("b".to_string(), 1);
    assert_eq!(verify(&txns, "t", 7, 0, std::slice::from_ref(&a)), Ok(vec![false]), "nothing added yet");
    let c = add1(&txns, "t", 7, 0, std::slice::from_ref(&a), None, 1).expect("add").expect("a change");
    install(&mut txns, c, false);
    let before = txns.clone();
    assert_eq!(verify(&txns, "t", 7, 0, &[a.clone(), b.clone()]), Ok(vec![true, false]));
    assert_eq!(txns, before, "verification changes nothing");
    assert_eq!(verify(&txns, "t", 8, 0, std::slice::from_ref(&a)), Err(TxnError::InvalidProducerIdMapping));
    assert_eq!(verify(&txns, "t", 7, 1, std::slice::from_ref(&a)), Err(TxnError::ProducerFenced));
    assert_eq!(verify(&txns, "nope", 7, 0, std::slice::from_ref(&a)), Err(TxnError::InvalidProducerIdMapping));
    let EndStep::Prepare(p) = end1(&txns, "t", 7, 0, true, 2).expect("end") else { panic!("prepare") };
    install(&mut txns, p.clone(), false);
    assert_eq!(verify(&txns, "t", 7, 0, std::slice::from_ref(&a)), Err(TxnError::ConcurrentTransactions));
    install(&mut txns, Change { transactional_id: "t".into(), meta: complete(&p.meta, 3) }, false);
    assert_eq!(verify(&txns, "t", 7, 0, &[a]), Ok(vec![false]), "the ended transaction no longer has it");
}

// --- transaction version 2 (KIP-890 part 2) -------------------------------------------------

/// A version 2 client's transaction on partition x-0: added (as the produce does), then ended.
fn tv2_round(t: &mut Txns, pid: i64, epoch: i16, commit: bool, new_pid: i64, now: i64) -> (i64, i16) {
    let c = add(t, "a", pid, epoch, &[tp("x", 0)], None, true, now).expect("add");
    write(t, c);
    assert!(t["a"].tv2);
    finish_with(t, "a", &end_input(pid, epoch, commit, true, new_pid, now)).expect("end")
}

#[test]
fn tv2_bumps_the_epoch_at_every_end_and_fences_the_previous_one() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let c = add(&t, "a", 7, 0, &[tp("x", 0)], None, true, 1).unwrap();
    write(&mut t, c);
    let EndStep::Prepare(p) = end(&t, "a", &end_input(7, 0, true, true, -1, 2)).unwrap() else { panic!("prepare") };
    assert_eq!((p.meta.producer_epoch, p.meta.last_producer_epoch), (1, 0), "the markers carry the bumped epoch");
    install(&mut t, p.clone(), false);
    // While the markers are written, the retry (old epoch) waits; the old epoch is fenced.
    assert_eq!(end(&t, "a", &end_input(7, 0, true, true, -1, 3)), Err(TxnError::ConcurrentTransactions));
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&p.meta, 3) }, false);
    assert_eq!((t["a"].producer_id, t["a"].producer_epoch, t["a"].state), (7, 1, TxnState::CompleteCommit));
    // A retried EndTxn presents the epoch before the bump: done, nothing written.
    assert_eq!(end(&t, "a", &end_input(7, 0, true, true, -1, 4)), Ok(EndStep::AlreadyDone));
    assert!(matches!(end(&t, "a", &end_input(7, 0, false, true, -1, 4)), Err(TxnError::InvalidTxnState(_))));
    // The old epoch cannot add or verify any more (a zombie's late batch).
    assert_eq!(add(&t, "a", 7, 0, &[tp("x", 0)], None, true, 5), Err(TxnError::ProducerFenced));
    assert_eq!(verify(&t, "a", 7, 0, &[tp("x", 0)]), Err(TxnError::ProducerFenced));
    // The next transactions go on with the epoch each end answered.
    assert_eq!(tv2_round(&mut t, 7, 1, false, -1, 6), (7, 2));
    assert_eq!(t["a"].state, TxnState::CompleteAbort);
    assert_eq!(tv2_round(&mut t, 7, 2, true, -1, 7), (7, 3));
    assert_eq!(end(&t, "a", &end_input(7, 1, true, true, -1, 8)), Err(TxnError::ProducerFenced), "two ends ago");
}

#[test]
fn tv2_an_exhausted_epoch_moves_to_a_new_producer_id_at_the_end() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    t.get_mut("a").unwrap().producer_epoch = i16::MAX - 2;
    assert_eq!(tv2_round(&mut t, 7, i16::MAX - 2, true, -1, 1), (7, i16::MAX - 1));
    let c = add(&t, "a", 7, i16::MAX - 1, &[tp("x", 0)], None, true, 2).unwrap();
    write(&mut t, c);
    assert!(end_needs_fresh_id(&t, "a", true));
    assert!(!end_needs_fresh_id(&t, "a", false), "version 1 ends do not bump");
    let EndStep::Prepare(p) = end(&t, "a", &end_input(7, i16::MAX - 1, true, true, 9, 3)).unwrap() else {
        panic!("prepare")
    };
    assert_eq!((p.meta.producer_id, p.meta.producer_epoch, p.meta.next_producer_id), (7, i16::MAX, 9));
    install(&mut t, p.clone(), false);
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&p.meta, 4) }, false);
    let m = &t["a"];
    assert_eq!((m.producer_id, m.producer_epoch, m.previous_producer_id, m.next_producer_id), (9, 0, 7, -1));
    // The retry with the old id and epoch is recognised; anything else of the old id is not.
    assert_eq!(end(&t, "a", &end_input(7, i16::MAX - 1, true, true, -1, 5)), Ok(EndStep::AlreadyDone));
    assert_eq!(end(&t, "a", &end_input(7, 3, true, true, -1, 5)), Err(TxnError::InvalidProducerIdMapping));
    assert_eq!(tv2_round(&mut t, 9, 0, true, -1, 6), (9, 1));
}

#[test]
fn tv2_a_timed_out_transaction_fences_its_producer_exactly() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let c = add(&t, "a", 7, 0, &[tp("x", 0)], None, true, 1_000).unwrap();
    write(&mut t, c);
    let due = timed_out(&t, 62_000);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].meta.producer_epoch, 2, "fence and abort: two bumps, as Kafka");
    install(&mut t, due[0].clone(), false);
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&due[0].meta, 62_001) }, false);
    // The producer's own abort (epoch 0) is no retry of an end that bumped once: fenced.
    assert_eq!(end(&t, "a", &end_input(7, 0, false, true, -1, 62_002)), Err(TxnError::ProducerFenced));
    assert_eq!(add(&t, "a", 7, 0, &[tp("x", 0)], None, true, 62_002), Err(TxnError::ProducerFenced));
}

#[test]
fn tv2_an_end_without_partitions_bumps_the_epoch_and_writes_no_marker() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    // The client's produce never reached the coordinator; it aborts (Empty state).
    let EndStep::Prepare(p) = end(&t, "a", &end_input(7, 0, false, true, -1, 1)).unwrap() else { panic!("prepare") };
    assert!(p.meta.partitions.is_empty() && p.meta.groups.is_empty());
    assert_eq!(p.meta.producer_epoch, 1);
    install(&mut t, p.clone(), false);
    install(&mut t, Change { transactional_id: "a".into(), meta: complete(&p.meta, 2) }, false);
    assert_eq!((t["a"].producer_epoch, t["a"].state), (1, TxnState::CompleteAbort));
    // A version 1 client in the same situation gets Kafka's state error.
    let mut v1 = Txns::new();
    apply_init(&mut v1, "a", None, 7, 0).unwrap();
    assert!(matches!(end1(&v1, "a", 7, 0, false, 1), Err(TxnError::InvalidTxnState(_))));
}

#[test]
fn tv2_offsets_join_the_transaction_through_txn_offset_commit() {
    let mut t = Txns::new();
    apply_init(&mut t, "a", None, 7, 0).unwrap();
    let offsets = tp("__consumer_offsets", 3);
    let c = add(&t, "a", 7, 0, std::slice::from_ref(&offsets), Some("g"), true, 1).unwrap();
    write(&mut t, c);
    assert!(t["a"].groups.contains("g") && t["a"].partitions.contains(&offsets) && t["a"].tv2);
    assert_eq!(add(&t, "a", 7, 0, &[offsets], Some("g"), true, 2), Ok(None), "already in: nothing to write");
}

proptest! {
    /// A version 2 client that always goes on with what EndTxn answered: every end's markers
    /// carry a higher epoch (or a new producer id) than every batch before it, a client never
    /// holds an epoch older than the table's, and an older epoch is always refused.
    #[test]
    fn tv2_random_transactions_bump_the_epoch_at_every_end(
        ops in proptest::collection::vec((any::<bool>(), any::<bool>(), 0..3i32), 1..40),
        start_epoch in prop_oneof![Just(0i16), Just(i16::MAX - 5)],
    ) {
        let mut t = Txns::new();
        apply_init(&mut t, "a", None, 7, 0).unwrap();
        t.get_mut("a").unwrap().producer_epoch = start_epoch;
        let mut client = (7i64, start_epoch);
        let mut next_pid = 100i64;
        for (i, (produce, commit, p)) in ops.into_iter().enumerate() {
            let now = i64::try_from(i).unwrap() + 1;
            if produce {
                let c = add(&t, "a", client.0, client.1, &[tp("x", p)], None, true, now);
                prop_assert!(c.is_ok(), "the current producer adds: {:?}", c);
                write(&mut t, c.unwrap());
            }
            let new_pid = if end_needs_fresh_id(&t, "a", true) { next_pid += 1; next_pid } else { -1 };
            let before = client;
            let EndStep::Prepare(prep) = end(&t, "a", &end_input(client.0, client.1, commit, true, new_pid, now)).unwrap() else {
                return Err(TestCaseError::fail("a fresh end prepares"));
            };
            prop_assert!(prep.meta.producer_epoch > before.1, "markers fence the epoch the batches used");
            install(&mut t, prep.clone(), false);
            install(&mut t, Change { transactional_id: "a".into(), meta: complete(&prep.meta, now) }, false);
            client = (t["a"].producer_id, t["a"].producer_epoch);
            prop_assert!(client.0 != before.0 || client.1 == before.1 + 1);
            prop_assert!(client.0 == before.0 || client.1 == 0);
            prop_assert!(!epoch_exhausted(client.1) || client.1 == i16::MAX - 1);
            prop_assert_eq!(add(&t, "a", before.0, before.1, &[tp("x", 0)], None, true, now).err().is_some(), true);
            // The retry of this end is answered done.
            prop_assert_eq!(end(&t, "a", &end_input(before.0, before.1, commit, true, -1, now)), Ok(EndStep::AlreadyDone));
        }
    }
}

#[test]
fn between_an_answered_end_and_its_completion_the_id_waits() {
    // EndTxn is answered once the Prepare state is durable; until the markers and the Complete
    // state are written, the next transaction's operations are CONCURRENT_TRANSACTIONS (the
    // coordinator holds an add for a while first), and they go on once it completes.
    for tv2 in [false, true] {
        let mut t = Txns::new();
        apply_init(&mut t, "x", None, 7, 0).expect("init");
        let added = add(&t, "x", 7, 0, &[tp("a", 0)], None, tv2, 1).expect("add");
        write(&mut t, added);
        let EndStep::Prepare(c) = end(&t, "x", &end_input(7, 0, true, tv2, -1, 2)).expect("end") else {
            panic!("an open transaction's end prepares")
        };
        let answer = next_producer(&c.meta);
        assert_eq!(answer, (7, i16::from(tv2)), "version 2 goes on with the bumped epoch");
        install(&mut t, c.clone(), false);
        let (pid, epoch) = answer;
        assert_eq!(add(&t, "x", pid, epoch, &[tp("a", 0)], None, tv2, 3), Err(TxnError::ConcurrentTransactions));
        assert_eq!(verify(&t, "x", pid, epoch, &[tp("a", 0)]), Err(TxnError::ConcurrentTransactions));
        assert_eq!(end(&t, "x", &end_input(7, 0, true, tv2, -1, 3)), Err(TxnError::ConcurrentTransactions));
        assert!(matches!(init(&t, &init_input("x", None, -1, 3)), Err(TxnError::ConcurrentTransactions)));
        assert_eq!(pending_completion(&t), vec![c.clone()], "a crash here leaves it to the sweep");
        install(&mut t, Change { transactional_id: "x".into(), meta: complete(&c.meta, 4) }, false);
        let next = add(&t, "x", pid, epoch, &[tp("a", 0)], None, tv2, 5).expect("the next transaction");
        assert_eq!(next.map(|c| c.meta.state), Some(TxnState::Ongoing));
    }
}
