//! One value per glommio executor, kept in a thread-local slot: a shard's tasks that share
//! state (the sync rounds, the preparing queue) find it without passing it around.
//!
//! Contract: the slot holds the value of the executor running on this thread, by executor id;
//! an executor finds its own value (created on first use), never that of an earlier executor
//! of the same thread (a test thread may run several one after the other).

use std::cell::RefCell;
use std::rc::Rc;
use std::thread::LocalKey;

/// A thread-local slot for [`get`].
pub(crate) type Slot<T> = RefCell<Option<(usize, Rc<T>)>>;

/// The current executor's value in `slot`, created with `T::default()` on first use.
pub(crate) fn get<T: Default>(slot: &'static LocalKey<Slot<T>>) -> Rc<T> {
    let id = glommio::executor().id();
    slot.with(|s| {
        let mut s = s.borrow_mut();
        match &*s {
            Some((owner, v)) if *owner == id => v.clone(),
            _ => {
                let v = Rc::new(T::default());
                *s = Some((id, v.clone()));
                v
            }
        }
    })
}
