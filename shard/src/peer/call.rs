//! One call from this shard to another broker and its answer, for every kind of call alike
//! ([`PeerCall`]).
//!
//! Contract:
//! - [`call`] gives the request an id unique on this shard, registers a waiter for it, queues
//!   one request frame for `REQUEST_SHARD` of the callee and waits for the answer at most
//!   `C::TIMEOUT_MS`. The waiter is removed however the wait ends (answered, timed out, not
//!   queued, or the waiting future dropped), so a late reply finds none and is dropped. A call
//!   that gets no answer is a typed [`CallError`]; what it means (another round, a refusal) is
//!   the caller's to say.
//! - [`on_request`] (the callee's side) decodes the request, runs `C::serve` in a task of its
//!   own and sends the answer to the shard the request names; undecodable bytes are dropped
//!   with a warning (the caller's wait then times out).
//! - [`on_reply`] hands a decoded answer to its waiter, if it still waits and is of the same
//!   kind; anything else is dropped.
//! - Every `RefCell` borrow ends before an `.await`.

use super::wire::{put_header, Reader, WireError};
use super::{CallKind, Dir, Frame, REQUEST_SHARD};
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{select, Either};
use sluice_core::limits::PEER_CALL_MAX_TIMEOUT_MS;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// One kind of call: its frames, how long a caller waits, its payloads and the callee's work.
/// A request is `version | id | reply shard | the call`, a reply `version | id | the answer`
/// ([`encode_request`], [`encode_reply`]); the kind writes and reads only its own part.
pub(crate) trait PeerCall: Sized + 'static {
    /// What the callee answers.
    type Answer: 'static;
    const KIND: CallKind;
    /// How long a caller waits for the answer (a bound of `sluice_core::limits`, at most
    /// `PEER_CALL_MAX_TIMEOUT_MS`: checked when the kind is compiled).
    const TIMEOUT_MS: u64;
    /// Writes the call.
    fn put(&self, b: &mut BytesMut);
    /// Reads what [`PeerCall::put`] wrote.
    fn take(r: &mut Reader<'_>) -> Result<Self, WireError>;
    /// Writes an answer.
    fn put_answer(answer: &Self::Answer, b: &mut BytesMut);
    /// Reads what [`PeerCall::put_answer`] wrote.
    fn take_answer(r: &mut Reader<'_>) -> Result<Self::Answer, WireError>;
    /// The callee's work: the answer to a request from broker `from`.
    fn serve(self, shard: Rc<Shard>, from: i32) -> impl Future<Output = Self::Answer>;
}

/// A request's bytes.
pub(crate) fn encode_request<C: PeerCall>(id: u64, reply_shard: u16, c: &C) -> Bytes {
    let mut b = BytesMut::new();
    put_header(&mut b, id);
    b.put_u16(reply_shard);
    c.put(&mut b);
    b.freeze()
}

/// See [`encode_request`]: the id, the shard the answer goes to, the call.
pub(crate) fn decode_request<C: PeerCall>(b: &[u8]) -> Result<(u64, u16, C), WireError> {
    let mut r = Reader(b);
    let id = r.header()?;
    let reply_shard = r.u16()?;
    let c = C::take(&mut r)?;
    r.end()?;
    Ok((id, reply_shard, c))
}

/// A reply's bytes.
pub(crate) fn encode_reply<C: PeerCall>(id: u64, answer: &C::Answer) -> Bytes {
    let mut b = BytesMut::new();
    put_header(&mut b, id);
    C::put_answer(answer, &mut b);
    b.freeze()
}

/// See [`encode_reply`].
pub(crate) fn decode_reply<C: PeerCall>(b: &[u8]) -> Result<(u64, C::Answer), WireError> {
    let mut r = Reader(b);
    let id = r.header()?;
    let answer = C::take_answer(&mut r)?;
    r.end()?;
    Ok((id, answer))
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no transport to other brokers is installed")]
    NoLink,
    #[error("the request could not be queued for broker {to}")]
    NotSent { to: i32 },
    #[error("no answer within {ms} ms")]
    TimedOut { ms: u64 },
    #[error("the waiter was dropped before an answer")]
    Dropped,
}

/// This shard's calls waiting for their answer, by id: the kind and a
/// `oneshot::Sender<C::Answer>`.
type Waiting = HashMap<u64, (CallKind, Box<dyn Any>)>;

thread_local! {
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
    static WAITING: RefCell<Waiting> = RefCell::new(HashMap::new());
}

/// Removes the waiter of call `id` when the wait ends, however it ends.
struct Forget(u64);

impl Drop for Forget {
    fn drop(&mut self) {
        WAITING.with(|w| w.borrow_mut().remove(&self.0));
    }
}

fn register<C: PeerCall>() -> (Forget, oneshot::Receiver<C::Answer>) {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let (tx, rx) = oneshot::channel::<C::Answer>();
    WAITING.with(|w| w.borrow_mut().insert(id, (C::KIND, Box::new(tx))));
    (Forget(id), rx)
}

/// Hands `answer` to the waiter of call `id`; false when none of this kind waits.
fn answer<C: PeerCall>(id: u64, answer: C::Answer) -> bool {
    let waiter = WAITING.with(|w| {
        let mut w = w.borrow_mut();
        let ours = w.get(&id).is_some_and(|(kind, tx)| *kind == C::KIND && tx.is::<oneshot::Sender<C::Answer>>());
        if ours {
            w.remove(&id)
        } else {
            None
        }
    });
    let Some((_, tx)) = waiter else { return false };
    tx.downcast::<oneshot::Sender<C::Answer>>().is_ok_and(|tx| tx.send(answer).is_ok())
}

/// Sends `c` to broker `to` and waits for its answer (module docs); `reply_shard` is this
/// shard's index.
pub(crate) async fn call<C: PeerCall>(to: i32, reply_shard: u16, c: &C) -> Result<C::Answer, CallError> {
    const {
        assert!(C::TIMEOUT_MS > 0 && C::TIMEOUT_MS <= PEER_CALL_MAX_TIMEOUT_MS, "a peer call waits a bounded time");
    }
    let link = super::link().ok_or(CallError::NoLink)?;
    let (forget, rx) = register::<C>();
    let request = Frame { kind: C::KIND, dir: Dir::Request };
    if !link.send(to, REQUEST_SHARD, request, encode_request(forget.0, reply_shard, c)) {
        return Err(CallError::NotSent { to });
    }
    let limit = glommio::timer::sleep(Duration::from_millis(C::TIMEOUT_MS));
    match select(rx, Box::pin(limit)).await {
        Either::Left((Ok(a), _)) => Ok(a),
        Either::Left((Err(_), _)) => Err(CallError::Dropped),
        Either::Right(_) => Err(CallError::TimedOut { ms: C::TIMEOUT_MS }),
    }
}

/// A request from broker `from` (module docs).
pub(crate) fn on_request<C: PeerCall>(shard: &Rc<Shard>, from: i32, payload: Bytes) {
    let (id, reply_shard, c) = match decode_request::<C>(&payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(from, error = %e, call = C::KIND.what(), "undecodable peer call request dropped");
            return;
        }
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let a = c.serve(shard, from).await;
        let reply = Frame { kind: C::KIND, dir: Dir::Reply };
        let sent = super::link().is_some_and(|l| l.send(from, reply_shard, reply, encode_reply::<C>(id, &a)));
        if !sent {
            tracing::debug!(from, call = C::KIND.what(), "peer call reply not sent (the caller tries again)");
        }
    })
    .detach();
}

/// A reply from broker `from` to one of this shard's calls (module docs).
pub(crate) fn on_reply<C: PeerCall>(from: i32, payload: Bytes) {
    match decode_reply::<C>(&payload) {
        Ok((id, a)) => {
            answer::<C>(id, a);
        }
        Err(e) => tracing::warn!(from, error = %e, call = C::KIND.what(), "undecodable peer call reply dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{set_link, PeerLink};
    use super::*;

    /// A call whose answer is its number doubled.
    #[derive(Debug, PartialEq)]
    struct Double(u32);

    impl PeerCall for Double {
        type Answer = u32;
        const KIND: CallKind = CallKind::ShareState;
        const TIMEOUT_MS: u64 = 30;
        fn put(&self, b: &mut BytesMut) {
            b.put_u32(self.0);
        }
        fn take(r: &mut Reader<'_>) -> Result<Self, WireError> {
            r.u32().map(Double)
        }
        fn put_answer(a: &u32, b: &mut BytesMut) {
            b.put_u32(*a);
        }
        fn take_answer(r: &mut Reader<'_>) -> Result<u32, WireError> {
            r.u32()
        }
        async fn serve(self, _: Rc<Shard>, _: i32) -> u32 {
            self.0 * 2
        }
    }

    /// A transport that answers every request at once (`Some`), takes it and never answers
    /// (`None`), or refuses it; it records the frames it was given.
    struct Fake {
        answer: Option<bool>,
        sent: RefCell<Vec<(i32, u16, Frame)>>,
    }

    impl PeerLink for Fake {
        fn send(&self, to: i32, to_shard: u16, frame: Frame, payload: Bytes) -> bool {
            self.sent.borrow_mut().push((to, to_shard, frame));
            match self.answer {
                Some(true) => {
                    let (id, _, d) = decode_request::<Double>(&payload).expect("a request this test encoded");
                    on_reply::<Double>(to, encode_reply::<Double>(id, &(d.0 * 2)));
                    true
                }
                Some(false) => true,
                None => false,
            }
        }
    }

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(f).unwrap().join().unwrap();
    }

    fn fake(answer: Option<bool>) -> Rc<Fake> {
        let f = Rc::new(Fake { answer, sent: RefCell::new(Vec::new()) });
        set_link(f.clone());
        f
    }

    fn waiting() -> usize {
        WAITING.with(|w| w.borrow().len())
    }

    #[test]
    fn an_answered_call_gets_its_answer_and_leaves_no_waiter() {
        run(|| async {
            let link = fake(Some(true));
            assert_eq!(call(3, 5, &Double(21)).await, Ok(42));
            let request = Frame { kind: CallKind::ShareState, dir: Dir::Request };
            assert_eq!(*link.sent.borrow(), vec![(3, REQUEST_SHARD, request)]);
            assert_eq!(waiting(), 0);
        });
    }

    #[test]
    fn an_unanswered_call_times_out_and_a_late_answer_is_dropped() {
        run(|| async {
            fake(Some(false));
            let started = std::time::Instant::now();
            assert_eq!(call(3, 0, &Double(1)).await, Err(CallError::TimedOut { ms: Double::TIMEOUT_MS }));
            assert!(started.elapsed() >= Duration::from_millis(Double::TIMEOUT_MS));
            assert_eq!(waiting(), 0, "the waiter is dropped on a timeout");
            assert!(!answer::<Double>(1, 2), "a late answer finds no waiter");
        });
    }

    #[test]
    fn a_call_not_queued_or_without_a_link_fails_at_once() {
        run(|| async {
            assert_eq!(call(3, 0, &Double(1)).await, Err(CallError::NoLink));
            fake(None);
            assert_eq!(call(4, 0, &Double(1)).await, Err(CallError::NotSent { to: 4 }));
            assert_eq!(waiting(), 0);
        });
    }

    #[test]
    fn requests_and_replies_carry_the_header_and_damage_is_refused() {
        let b = encode_request(9, 2, &Double(5));
        assert_eq!(b.len(), 1 + 8 + 2 + 4);
        assert_eq!(decode_request::<Double>(&b), Ok((9, 2, Double(5))));
        for cut in 0..b.len() {
            assert!(decode_request::<Double>(&b[..cut]).is_err(), "a request cut at {cut} bytes must not decode");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(decode_request::<Double>(&long), Err(WireError::Trailing(1)));
        let r = encode_reply::<Double>(11, &10);
        assert_eq!(decode_reply::<Double>(&r), Ok((11, 10)));
        let mut other = r.to_vec();
        other[0] = 2;
        assert_eq!(decode_reply::<Double>(&other), Err(WireError::Version(2)));
    }

    #[test]
    fn an_answer_of_another_kind_does_not_take_the_waiter() {
        run(|| async {
            let (forget, mut rx) = register::<Double>();
            assert!(!answer::<Other>(forget.0, ()), "another kind's answer is dropped");
            assert_eq!(waiting(), 1);
            assert!(answer::<Double>(forget.0, 8));
            assert_eq!(rx.try_recv(), Ok(Some(8)));
            drop(forget);
            assert_eq!(waiting(), 0);
        });
    }

    struct Other;

    impl PeerCall for Other {
        type Answer = ();
        const KIND: CallKind = CallKind::TxnVerify;
        const TIMEOUT_MS: u64 = 30;
        fn put(&self, _: &mut BytesMut) {}
        fn take(_: &mut Reader<'_>) -> Result<Self, WireError> {
            Ok(Other)
        }
        fn put_answer(_: &(), _: &mut BytesMut) {}
        fn take_answer(_: &mut Reader<'_>) -> Result<(), WireError> {
            Ok(())
        }
        async fn serve(self, _: Rc<Shard>, _: i32) {}
    }
}
