//! Tasks whose output is awaited, without keeping glommio's `JoinHandle`.
//!
//! Contract: [`spawn_awaited`] starts a future as a task of the calling executor, detached at
//! once, and returns a future of its output, delivered through a local oneshot. The task is
//! never cancelled: dropping the returned future leaves it running to completion, and its
//! output is then dropped. The returned future yields `None` only if the task was dropped
//! before finishing (its executor stopped). Every task of the broker whose output another task
//! awaits is started this way: glommio's `Task` (or a kept `JoinHandle`) is not used for
//! tasks that may be woken from another thread, which on the request path is every task that
//! asks a remote shard (replies come through `futures::channel::oneshot` completed there).
//!
//! Why (glommio 0.9.0, DataDog): a waker dropped on a thread other than its task's executor
//! decrements the task's reference count and, if that reaches zero, clones the waker again
//! (back to one) to send it home, where the task is freed. For the instructions in between
//! the count reads zero while that thread still uses the task. `JoinHandle::drop` (run when a
//! `Task` that was awaited is dropped) reads the count without holding a reference and, if it
//! reads zero for a finished task, frees the task there and then: the remote thread then
//! writes to freed memory and queues a waker for it, whose later wake and drop on the home
//! executor free it a second time ("free(): double free detected in tcache 2"). A task
//! detached at spawn takes `JoinHandle::drop`'s early return (the task has not run yet), so
//! only the reference-count decrements, which one thread at a time takes to zero, decide when
//! it is freed.

use futures::channel::oneshot;
use std::future::Future;

/// Runs `fut` as a detached task of this executor; the returned future yields its output.
pub fn spawn_awaited<T: 'static>(fut: impl Future<Output = T> + 'static) -> impl Future<Output = Option<T>> {
    let (tx, rx) = oneshot::channel();
    glommio::spawn_local(async move {
        // The receiver may be gone (its awaiter dropped): the output is dropped here.
        let _ = tx.send(fut.await);
    })
    .detach();
    async move { rx.await.ok() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    fn on_executor<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default().spawn(f).unwrap().join().unwrap();
    }

    #[test]
    fn yields_the_output() {
        on_executor(|| async {
            let out = spawn_awaited(async {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                7
            })
            .await;
            assert_eq!(out, Some(7));
        });
    }

    #[test]
    fn dropping_the_awaiter_does_not_cancel_the_task() {
        on_executor(|| async {
            let ran = Rc::new(Cell::new(false));
            let flag = ran.clone();
            let (go, wait) = oneshot::channel::<()>();
            let awaited = spawn_awaited(async move {
                let _ = wait.await;
                flag.set(true);
            });
            drop(awaited);
            go.send(()).unwrap();
            for _ in 0..100 {
                if ran.get() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert!(ran.get(), "the task must run to completion after its awaiter is gone");
        });
    }

    /// The broker's pattern: tasks awaiting replies completed on other threads, awaited and
    /// dropped on their executor. (Under glommio 0.9 the `Task`-based version frees tasks that
    /// a remote thread still uses when that thread is delayed between its decrement and its
    /// clone; this run is a smoke test of the replacement, the race needs such a delay.)
    #[test]
    fn replies_from_other_threads_are_delivered() {
        const TASKS: u64 = 20_000;
        let (queue, inbox) = std::sync::mpsc::channel::<oneshot::Sender<u64>>();
        let remote = std::thread::spawn(move || {
            while let Ok(reply) = inbox.recv() {
                let _ = reply.send(1);
            }
        });
        on_executor(move || async move {
            let mut sum = 0;
            for _ in 0..TASKS / 100 {
                let mut pending = Vec::new();
                for _ in 0..100 {
                    let (tx, rx) = oneshot::channel::<u64>();
                    queue.send(tx).unwrap();
                    pending.push(spawn_awaited(async move { rx.await.unwrap_or(0) }));
                }
                for p in pending {
                    sum += p.await.expect("the task ran");
                }
            }
            assert_eq!(sum, TASKS);
        });
        remote.join().unwrap();
    }
}

/// The broker's sources keep no glommio `Task` or `JoinHandle` of a task that other threads
/// may wake: every `spawn_local` is detached in the statement that spawns it and its handle
/// dropped there, except the handles listed here, of tasks only their own shard wakes.
#[cfg(test)]
mod guard {
    use std::path::{Path, PathBuf};

    /// (file, why its kept handle is safe).
    const KEPT_HANDLES: &[(&str, &str)] = &[
        ("shard/src/task.rs", "the helper itself: detached, handle dropped at once"),
        ("storage/src/log/mod.rs", "a log's flusher: local channel and its own file I/O"),
        ("storage/src/log/flush.rs", "a segment seal: its own file I/O"),
        ("shard/src/runtime.rs", "retention: timers, the shard's stop signal, its own logs"),
    ];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The text after the `)` closing the parenthesis opened at `open`.
    fn after_call(text: &str, open: usize) -> &str {
        let mut depth = 0;
        for (i, c) in text[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open + i + 1..];
                    }
                }
                _ => {}
            }
        }
        ""
    }

    /// `Some(reason)` if the spawn at `at` keeps its task's handle.
    fn kept(text: &str, at: usize) -> Option<&'static str> {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        if !text[line_start..at].trim().is_empty() && text[line_start..at].trim() != "glommio::" {
            return Some("the spawn is not a statement of its own (its handle is kept or awaited)");
        }
        let open = at + text[at..].find('(').unwrap();
        let rest = after_call(text, open).trim_start();
        if !rest.starts_with(".detach();") {
            return Some("not detached in the spawning statement");
        }
        None
    }

    #[test]
    fn no_task_handle_is_kept_for_tasks_other_threads_may_wake() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let mut files = Vec::new();
        for dir in ["core/src", "storage/src", "shard/src", "net/src"] {
            sources(&root.join(dir), &mut files);
        }
        let mut bad = Vec::new();
        for f in &files {
            let rel = f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            if KEPT_HANDLES.iter().any(|(k, _)| *k == rel) {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            for (at, _) in text.match_indices("spawn_local") {
                let name_end = at + text[at..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap();
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                if !text[name_end..].starts_with('(') || text[line_start..at].trim_start().starts_with("//") {
                    continue; // not a call, or in a comment
                }
                let start = text[..at].rfind("glommio::").filter(|s| s + "glommio::".len() == at).unwrap_or(at);
                if let Some(why) = kept(&text, start) {
                    let line = text[..at].matches('\n').count() + 1;
                    bad.push(format!("{rel}:{line}: {why}"));
                }
            }
        }
        assert!(bad.is_empty(), "use sluice_shard::task::spawn_awaited (see its module doc):\n{}", bad.join("\n"));
    }
}
