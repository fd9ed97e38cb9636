//! The transactions of one coordinator shard and every decision about them, without I/O:
//! what InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, the completion of the
//! markers, the timeout sweep and replay do to the table (Kafka's `TransactionCoordinator` and
//! `TransactionMetadata`): transaction version 1, and version 2 (KIP-890 part 2) for the
//! transactions its clients run — every EndTxn bumps the producer epoch (the markers carry the
//! bumped one, fencing every older epoch exactly), and an exhausted epoch moves the producer to
//! a new producer id at the end of the transaction.
//!
//! Contract: nothing here reads the clock or touches storage; time comes in as `now_ms`.
//! Every change is returned as the new [`TxnMeta`] to write ([`Change`]); the caller makes it
//! durable in `__transaction_state` and only then installs it with [`install`], so what the
//! table holds is always what a replay would rebuild. States move only along
//! Empty → Ongoing → PrepareCommit/PrepareAbort → CompleteCommit/CompleteAbort → Ongoing/Empty
//! (asserted in [`install`]); in version 2 an EndTxn may also end a transaction that never got
//! a partition (Empty/Complete → Prepare, no markers), since its client adds partitions
//! through the produce and cannot know whether one got through.

use super::TxnError;
use std::collections::{BTreeSet, HashMap};

/// Kafka's `TransactionState`, without the states a single broker never needs (Dead is a
/// removed entry; a fence is an abort with the epoch bumped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's names (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub fn from_byte(b: u8) -> Option<TxnState> {
        Some(match b {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    pub fn is_complete(self) -> bool {
        matches!(self, TxnState::CompleteCommit | TxnState::CompleteAbort)
    }

    /// Whether `self → next` is a transition Kafka allows.
    pub fn may_become(self, next: TxnState) -> bool {
        use TxnState::*;
        match next {
            Empty => matches!(self, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(self, Empty | Ongoing | CompleteCommit | CompleteAbort),
            PrepareCommit | PrepareAbort => matches!(self, Ongoing | Empty | CompleteCommit | CompleteAbort),
            CompleteCommit => self == PrepareCommit,
            CompleteAbort => self == PrepareAbort,
        }
    }
}

/// One transactional id's state, exactly what its `__transaction_state` record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (KIP-360: a retried InitProducerId presents it).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// (topic, partition) of the open transaction, `__consumer_offsets` ones included.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// When the open transaction started (its first AddPartitions), -1 when none.
    pub start_ms: i64,
    pub update_ms: i64,
    /// The transaction is run by a client of transaction version 2 (Kafka's
    /// `clientTransactionVersion`): its EndTxn bumps the epoch, and a retried EndTxn presents
    /// the epoch before the bump.
    pub tv2: bool,
    /// The producer id before an exhausted epoch moved the producer to a new one (-1: none), so
    /// a retried EndTxn with the old id is recognised.
    pub previous_producer_id: i64,
    /// While a version 2 transaction whose epoch is exhausted ends: the producer id it moves to
    /// at its Complete state (-1: none).
    pub next_producer_id: i64,
}

/// An epoch a producer may not be given: `i16::MAX` stays free so a fence can always bump.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// Every transactional id of one coordinator shard.
pub type Txns = HashMap<String, TxnMeta>;

/// A state to make durable, then [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

/// What InitProducerId needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Write this, then answer with its producer id and epoch.
    Write(Change),
    /// An open transaction must be aborted first (this change is its PrepareAbort with the
    /// epoch bumped, which fences the old producer); the client is told to retry.
    AbortFirst(Change),
}

/// Producer ids and epochs handed out: a fresh id when needed (`None`: allocate one).
pub struct InitInput<'a> {
    pub transactional_id: &'a str,
    pub timeout_ms: i32,
    /// KIP-360: the producer id and epoch the client had, when it has one.
    pub given: Option<(i64, i16)>,
    pub new_producer_id: i64,
    pub now_ms: i64,
    pub max_timeout_ms: i32,
}

/// InitProducerId with a transactional id (Kafka `TransactionCoordinator.handleInitProducerId`).
pub fn init(txns: &Txns, input: &InitInput<'_>) -> Result<InitStep, TxnError> {
    if input.transactional_id.is_empty() {
        return Err(TxnError::InvalidRequest("empty transactional id".into()));
    }
    if input.timeout_ms <= 0 || input.timeout_ms > input.max_timeout_ms {
        return Err(TxnError::InvalidTransactionTimeout(input.timeout_ms));
    }
    let id = input.transactional_id.to_string();
    let Some(m) = txns.get(input.transactional_id) else {
        let meta = TxnMeta {
            producer_id: input.new_producer_id,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms: input.timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            update_ms: input.now_ms,
            tv2: false,
            previous_producer_id: -1,
            next_producer_id: -1,
        };
        return Ok(InitStep::Write(Change { transactional_id: id, meta }));
    };
    if let Some((pid, epoch)) = input.given {
        // KIP-360: only the current producer (or a retry of its last InitProducerId) may
        // recover; anyone else is a zombie.
        let current = (pid == m.producer_id && (epoch == m.producer_epoch || epoch == m.last_producer_epoch))
            || (pid == m.previous_producer_id && epoch_exhausted(epoch));
        if !current {
            return Err(TxnError::ProducerFenced);
        }
        if epoch == m.last_producer_epoch && m.state == TxnState::Empty {
            // A retry of the InitProducerId that already bumped: same answer again.
            return Ok(InitStep::Write(Change { transactional_id: id, meta: m.clone() }));
        }
    }
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnState::Ongoing => {
            Ok(InitStep::AbortFirst(Change { transactional_id: id, meta: prepare_abort_fenced(m, input.now_ms) }))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut meta = m.clone();
            if epoch_exhausted(m.producer_epoch) {
                meta.previous_producer_id = m.producer_id;
                meta.producer_id = input.new_producer_id;
                meta.producer_epoch = 0;
                meta.last_producer_epoch = -1;
            } else {
                meta.last_producer_epoch = m.producer_epoch;
                meta.producer_epoch = m.producer_epoch + 1;
            }
            meta.timeout_ms = input.timeout_ms;
            meta.state = TxnState::Empty;
            meta.partitions.clear();
            meta.groups.clear();
            meta.start_ms = -1;
            meta.update_ms = input.now_ms;
            Ok(InitStep::Write(Change { transactional_id: id, meta }))
        }
    }
}

/// An abort of an open transaction that also fences its producer (the epoch is bumped, and
/// the markers carry the new epoch): InitProducerId over an open transaction, or its timeout.
fn prepare_abort_fenced(m: &TxnMeta, now_ms: i64) -> TxnMeta {
    let mut meta = m.clone();
    // Version 2 bumps twice, as Kafka's fence followed by its abort's own bump: the fenced
    // client's retried EndTxn (epoch + 1 expected) is refused, not taken for a retry.
    let bumps: i16 = if m.tv2 { 2 } else { 1 };
    let target = m.producer_epoch.saturating_add(bumps).min(i16::MAX - 1);
    if target > m.producer_epoch {
        meta.last_producer_epoch = m.producer_epoch;
        meta.producer_epoch = target;
    }
    meta.state = TxnState::PrepareAbort;
    meta.update_ms = now_ms;
    meta
}

fn check_producer(txns: &Txns, id: &str, producer_id: i64, epoch: i16) -> Result<TxnMeta, TxnError> {
    let m = txns.get(id).ok_or(TxnError::InvalidProducerIdMapping)?;
    if m.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != epoch {
        return Err(TxnError::ProducerFenced);
    }
    Ok(m.clone())
}

/// AddPartitionsToTxn / AddOffsetsToTxn (and, `tv2`, the adds of transaction version 2:
/// Produce v12, TxnOffsetCommit v5): `None` when nothing changes (already added).
#[allow(clippy::too_many_arguments)] // the request's fields, each a plain value
pub fn add(
    txns: &Txns,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    group: Option<&str>,
    tv2: bool,
    now_ms: i64,
) -> Result<Option<Change>, TxnError> {
    let m = check_producer(txns, id, producer_id, epoch)?;
    if m.state.is_prepare() {
        return Err(TxnError::ConcurrentTransactions);
    }
    let known = partitions.iter().all(|p| m.partitions.contains(p)) && group.is_none_or(|g| m.groups.contains(g));
    if m.state == TxnState::Ongoing && known && (m.tv2 || !tv2) {
        return Ok(None);
    }
    let mut meta = m;
    if meta.state != TxnState::Ongoing {
        meta.partitions.clear();
        meta.groups.clear();
        meta.start_ms = now_ms;
        meta.tv2 = false;
    }
    meta.tv2 |= tv2;
    meta.state = TxnState::Ongoing;
    meta.partitions.extend(partitions.iter().cloned());
    if let Some(g) = group {
        meta.groups.insert(g.to_string());
    }
    meta.update_ms = now_ms;
    Ok(Some(Change { transactional_id: id.to_string(), meta }))
}

/// AddPartitionsToTxn v4's verify-only path (Kafka
/// `TransactionCoordinator.handleVerifyPartitionsInTransaction`, KIP-890 part 1): whether each
/// partition is in the producer's open transaction. Nothing changes. The producer must be the
/// id's current one (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED), and a transaction being
/// ended answers CONCURRENT_TRANSACTIONS.
pub fn verify(
    txns: &Txns,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<Vec<bool>, TxnError> {
    if id.is_empty() {
        return Err(TxnError::InvalidRequest("empty transactional id".into()));
    }
    let m = check_producer(txns, id, producer_id, epoch)?;
    if m.state.is_prepare() {
        return Err(TxnError::ConcurrentTransactions);
    }
    Ok(partitions.iter().map(|p| m.partitions.contains(p)).collect())
}

/// What EndTxn needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Write this Prepare state, send the markers, then write [`complete`]'s state.
    Prepare(Change),
    /// A retry of an EndTxn that already completed the same way: answer success.
    AlreadyDone,
}

/// An EndTxn request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndInput {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    /// EndTxn v5+: the client runs transaction version 2 (the epoch is bumped).
    pub tv2: bool,
    /// A fresh producer id when a version 2 end exhausts the epoch ([`end_needs_fresh_id`]),
    /// else -1.
    pub new_producer_id: i64,
    pub now_ms: i64,
}

/// Whether this EndTxn moves the producer to a new producer id (its epoch is exhausted).
pub fn end_needs_fresh_id(txns: &Txns, id: &str, tv2: bool) -> bool {
    tv2 && txns.get(id).is_some_and(|m| !m.state.is_prepare() && epoch_exhausted(m.producer_epoch))
}

/// EndTxn (Kafka `TransactionCoordinator.handleEndTransaction`, versions 1 and 2). In version
/// 2 the Prepare state carries the epoch bumped (and, the epoch exhausted, the producer id to
/// move to), and a retry presents the epoch before the bump.
pub fn end(txns: &Txns, id: &str, input: &EndInput) -> Result<EndStep, TxnError> {
    let m = txns.get(id).ok_or(TxnError::InvalidProducerIdMapping)?;
    let (pid, epoch, commit) = (input.producer_id, input.epoch, input.commit);
    // A retry of a version 2 end that bumped the epoch, or that moved to a new producer id.
    let retry_bumped = m.tv2 && m.producer_id == pid && epoch.checked_add(1) == Some(m.producer_epoch);
    let retry_overflow = m.tv2
        && m.previous_producer_id == pid
        && epoch_exhausted(epoch)
        && m.producer_epoch == 0
        && !m.state.is_prepare();
    if m.producer_id != pid && !retry_overflow {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    let current = m.producer_id == pid && epoch == m.producer_epoch;
    let valid = match m.state {
        TxnState::Ongoing | TxnState::Empty => current,
        TxnState::PrepareCommit | TxnState::PrepareAbort => current || retry_bumped,
        TxnState::CompleteCommit | TxnState::CompleteAbort => current || retry_bumped || retry_overflow,
    };
    if !valid {
        return Err(TxnError::ProducerFenced);
    }
    let done = (m.state == TxnState::CompleteCommit && commit) || (m.state == TxnState::CompleteAbort && !commit);
    match m.state {
        TxnState::Ongoing => Ok(EndStep::Prepare(Change { transactional_id: id.to_string(), meta: prepare(m, input) })),
        // Version 2: a transaction whose partitions never reached the coordinator (its client
        // cannot tell) ends with no marker, the epoch bumped all the same.
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort if input.tv2 && current => {
            Ok(EndStep::Prepare(Change { transactional_id: id.to_string(), meta: prepare(m, input) }))
        }
        TxnState::CompleteCommit | TxnState::CompleteAbort if done => Ok(EndStep::AlreadyDone),
        TxnState::PrepareCommit if commit => Err(TxnError::ConcurrentTransactions),
        TxnState::PrepareAbort if !commit => Err(TxnError::ConcurrentTransactions),
        _ => Err(TxnError::InvalidTxnState(format!(
            "EndTxn({}) in state {}",
            if commit { "commit" } else { "abort" },
            m.state.name()
        ))),
    }
}

/// The Prepare state of an EndTxn (module docs).
fn prepare(m: &TxnMeta, input: &EndInput) -> TxnMeta {
    let mut meta = m.clone();
    meta.state = if input.commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
    meta.update_ms = input.now_ms;
    if m.state != TxnState::Ongoing {
        meta.partitions.clear();
        meta.groups.clear();
        meta.start_ms = input.now_ms;
    }
    if input.tv2 {
        meta.tv2 = true;
        meta.last_producer_epoch = m.producer_epoch;
        // At most i16::MAX: the markers of the last transaction of an exhausted id carry it.
        meta.producer_epoch = m.producer_epoch.saturating_add(1);
        if epoch_exhausted(m.producer_epoch) {
            assert!(input.new_producer_id >= 0, "an exhausted epoch's end gets a fresh producer id");
            meta.next_producer_id = input.new_producer_id;
        }
    }
    meta
}

/// The Complete state following a Prepare one, once every marker is written.
pub fn complete(prepared: &TxnMeta, now_ms: i64) -> TxnMeta {
    let mut meta = prepared.clone();
    meta.state = match prepared.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        other => panic!("complete() of a transaction in state {}", other.name()),
    };
    if prepared.next_producer_id >= 0 {
        // Version 2, epoch exhausted: the producer goes on with the new id at epoch 0 (the
        // last epoch it saw stays the one before the bump).
        meta.previous_producer_id = prepared.producer_id;
        meta.producer_id = prepared.next_producer_id;
        meta.producer_epoch = 0;
        meta.next_producer_id = -1;
    }
    meta.partitions.clear();
    meta.groups.clear();
    meta.start_ms = -1;
    meta.update_ms = now_ms;
    meta
}

/// The producer id and epoch the producer goes on with once `prepared` completes: EndTxn's
/// answer, given as soon as the Prepare state is durable (before the markers, as Kafka
/// answers), so it must be what [`complete`] will install.
pub fn next_producer(prepared: &TxnMeta) -> (i64, i16) {
    if prepared.next_producer_id >= 0 {
        (prepared.next_producer_id, 0)
    } else {
        (prepared.producer_id, prepared.producer_epoch)
    }
}

/// Open transactions past their timeout, as the PrepareAbort (epoch bumped) to write for each.
pub fn timed_out(txns: &Txns, now_ms: i64) -> Vec<Change> {
    let mut out: Vec<Change> = txns
        .iter()
        .filter(|(_, m)| m.state == TxnState::Ongoing && now_ms.saturating_sub(m.start_ms) > i64::from(m.timeout_ms))
        .map(|(id, m)| Change { transactional_id: id.clone(), meta: prepare_abort_fenced(m, now_ms) })
        .collect();
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    out
}

/// Ids without an open transaction whose last update is older than `expiration_ms`
/// (`transactional.id.expiration.ms`): their entries are removed (a tombstone is written).
pub fn expired(txns: &Txns, now_ms: i64, expiration_ms: i64) -> Vec<String> {
    let mut out: Vec<String> = txns
        .iter()
        .filter(|(_, m)| {
            matches!(m.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
                && now_ms.saturating_sub(m.update_ms) >= expiration_ms
        })
        .map(|(id, _)| id.clone())
        .collect();
    out.sort();
    out
}

/// Installs a change that is now durable (or replayed). Panics on a transition Kafka does not
/// allow, unless it is a replay (`replay`: the log is the truth).
pub fn install(txns: &mut Txns, change: Change, replay: bool) {
    if !replay {
        if let Some(old) = txns.get(&change.transactional_id) {
            let same = old.state == change.meta.state;
            assert!(
                same || old.state.may_become(change.meta.state),
                "transaction {}: {} may not become {}",
                change.transactional_id,
                old.state.name(),
                change.meta.state.name()
            );
        }
    }
    txns.insert(change.transactional_id, change.meta);
}

/// Transactions a replay left between Prepare and Complete: their markers must be sent again.
pub fn pending_completion(txns: &Txns) -> Vec<Change> {
    let mut out: Vec<Change> = txns
        .iter()
        .filter(|(_, m)| m.state.is_prepare())
        .map(|(id, m)| Change { transactional_id: id.clone(), meta: m.clone() })
        .collect();
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    out
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
