//! [`ReadWatch`]: a socket read that would block, watched by the pool worker that made it
//! instead of registered with the `async-io` reactor, while that worker spins.
//!
//! Why: with one call in flight, the time a call takes is mostly system calls on each side,
//! and the reactor adds several to every message. One reactor poll is five (`timerfd_settime`,
//! `epoll_ctl` on the timer, `epoll_pwait`, `read` on the notifier, `epoll_ctl` on the notifier),
//! and a read that would block re-arms the socket's one-shot interest with one more
//! `epoll_ctl`. A worker spinning on the reactor sees a message only at the end of such a poll
//! and pays all of them before it reads. A worker spinning on its watched sockets makes one
//! `poll` on them a round (the reactor still gets every few rounds, for everything else), and a
//! read that would block registers nothing in the kernel.
//!
//! The rules that keep a watched read from being lost: a read is watched only by the worker
//! that ran it, and only when that worker is about to spin; the worker looks at its watches
//! between its batches of tasks and on every round of a spin, and when it stops watching (it
//! is going to sleep, or the pool's monitor finds it stuck in a long poll) it fires every watch,
//! so each read is tried again and, if it still would block, registered with the reactor as
//! before.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// A socket's read that would block, waiting for a worker to see the socket readable.
pub(crate) struct ReadWatch {
    /// The socket (weak: one dropped while watched closes at once; its watch is then dropped).
    fd: Weak<dyn AsFd + Send + Sync>,
    /// The read should be tried again: the socket was seen readable, or no one watches it any
    /// more.
    ready: AtomicBool,
    /// The reading task.
    waker: AtomicWaker,
}

impl std::fmt::Debug for ReadWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadWatch")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReadWatch {
    /// A watch for reads of `fd`.
    pub(crate) fn new(fd: Weak<dyn AsFd + Send + Sync>) -> Arc<ReadWatch> {
        Arc::new(ReadWatch {
            fd,
            ready: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// Hands the read that just would block to this thread's pool worker, which wakes `cx`'s
    /// task when it sees the socket readable. `false` (nothing done) where this thread is not
    /// a worker about to spin: then the read waits on the reactor.
    pub(crate) fn watch(self: &Arc<Self>, cx: &Context<'_>) -> bool {
        self.ready.store(false, Ordering::Release);
        self.waker.register(cx.waker());
        super::thread_pool::watch_readable(self)
    }

    /// Ready once the read should be tried again; until then `cx`'s task is the one woken. No
    /// system call.
    pub(crate) fn poll_ready(&self, cx: &Context<'_>) -> Poll<()> {
        if self.ready.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // The worker may have fired between the check and the registration.
        if self.ready.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Lets the read be tried again, waking its task.
    fn fire(&self) {
        self.ready.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Polls `fds` without blocking. An interrupted poll reports nothing; the next round looks
/// again.
fn poll_now(fds: &mut [PollFd<'_>]) {
    let _ = poll(fds, Some(&Timespec::default()));
}

/// One worker's watched reads (the pool's monitor fires them too, so they are behind a lock).
#[derive(Default)]
pub(crate) struct Watches {
    list: Mutex<Vec<Arc<ReadWatch>>>,
}

impl Watches {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<ReadWatch>>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a read to watch.
    pub(crate) fn push(&self, watch: Arc<ReadWatch>) {
        self.lock().push(watch);
    }

    /// Whether any read is watched.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Looks once, without blocking, at every watched socket; fires the watches of those that
    /// are readable (or closed, or in error) and of sockets that are gone. Whether any fired.
    pub(crate) fn check(&self) -> bool {
        let fired: Vec<Arc<ReadWatch>> = {
            let mut list = self.lock();
            match list.len() {
                0 => return false,
                // The usual case (a worker spinning on its one connection), without allocating.
                1 => {
                    let fire = list[0].fd.upgrade().is_none_or(|socket| {
                        let mut fds = [PollFd::new(&socket, PollFlags::IN)];
                        poll_now(&mut fds);
                        !fds[0].revents().is_empty()
                    });
                    if !fire {
                        return false;
                    }
                    std::mem::take(&mut *list)
                }
                _ => {
                    let sockets: Vec<Option<Arc<dyn AsFd + Send + Sync>>> =
                        list.iter().map(|watch| watch.fd.upgrade()).collect();
                    let mut fds: Vec<PollFd<'_>> = sockets
                        .iter()
                        .flatten()
                        .map(|socket| PollFd::new(socket, PollFlags::IN))
                        .collect();
                    poll_now(&mut fds);
                    // One answer per live socket, in the list's order.
                    let mut readable = fds.iter().map(|fd| !fd.revents().is_empty());
                    let mut fired = Vec::new();
                    for (watch, socket) in std::mem::take(&mut *list).into_iter().zip(&sockets) {
                        if socket.is_none() || readable.next() == Some(true) {
                            fired.push(watch);
                        } else {
                            list.push(watch);
                        }
                    }
                    fired
                }
            }
        };
        for watch in &fired {
            watch.fire();
        }
        !fired.is_empty()
    }

    /// Stops watching: fires every watch, so each read is tried again. Whether there were any.
    pub(crate) fn fire_all(&self) -> bool {
        let all = std::mem::take(&mut *self.lock());
        for watch in &all {
            watch.fire();
        }
        !all.is_empty()
    }

    /// Drops every watch unfired (the pool has shut down and drops its tasks).
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::WakeCounter;
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;
    use std::task::Waker;

    /// A watch of `socket` whose read is waiting (Pending) with a counting waker.
    fn waiting(socket: &Arc<UnixStream>) -> (Arc<ReadWatch>, Arc<WakeCounter>) {
        let weak: Weak<dyn AsFd + Send + Sync> = Arc::downgrade(socket) as _;
        let watch = ReadWatch::new(weak);
        let count = Arc::new(WakeCounter::default());
        let waker = Waker::from(count.clone());
        assert!(watch.poll_ready(&Context::from_waker(&waker)).is_pending());
        (watch, count)
    }

    #[test]
    fn a_watch_fires_once_its_socket_is_readable() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let ours = Arc::new(ours);
        let (watch, woken) = waiting(&ours);
        let watches = Watches::default();
        watches.push(watch.clone());
        assert!(!watches.check(), "fired with no data");
        assert!(!watches.is_empty());
        assert_eq!(woken.count(), 0);

        theirs.write_all(b"x").unwrap();
        assert!(watches.check());
        assert!(watches.is_empty(), "a fired watch stays watched");
        assert_eq!(woken.count(), 1);
        let waker = Waker::noop();
        assert!(watch.poll_ready(&Context::from_waker(waker)).is_ready());
        // Consumed: the next wait is Pending again.
        assert!(watch.poll_ready(&Context::from_waker(waker)).is_pending());
    }

    #[test]
    fn only_readable_sockets_fire_among_several() {
        let (ours, mut theirs): (Vec<Arc<UnixStream>>, Vec<Option<UnixStream>>) = (0..3)
            .map(|_| {
                let (ours, theirs) = UnixStream::pair().unwrap();
                (Arc::new(ours), Some(theirs))
            })
            .unzip();
        let watches = Watches::default();
        let waits: Vec<_> = ours.iter().map(waiting).collect();
        for (watch, _) in &waits {
            watches.push(watch.clone());
        }
        let woken = || -> Vec<usize> { waits.iter().map(|(_, count)| count.count()).collect() };
        theirs[1].as_ref().unwrap().write_all(b"x").unwrap();
        assert!(watches.check());
        assert_eq!(woken(), [0, 1, 0]);
        assert_eq!(watches.lock().len(), 2);
        // A peer that hangs up makes the socket readable (end of stream) too.
        theirs[0] = None;
        assert!(watches.check());
        assert_eq!(woken(), [1, 1, 0]);
        assert_eq!(watches.lock().len(), 1);
    }

    #[test]
    fn the_watch_of_a_dropped_socket_fires_and_is_let_go() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let ours = Arc::new(ours);
        let (watch, woken) = waiting(&ours);
        let watches = Watches::default();
        watches.push(watch);
        drop(ours);
        assert!(watches.check());
        assert!(watches.is_empty());
        assert_eq!(woken.count(), 1);
    }

    #[test]
    fn stopping_fires_every_watch() {
        let sockets: Vec<(Arc<UnixStream>, UnixStream)> = (0..2)
            .map(|_| {
                let (ours, theirs) = UnixStream::pair().unwrap();
                (Arc::new(ours), theirs)
            })
            .collect();
        let watches = Watches::default();
        let waits: Vec<_> = sockets.iter().map(|(ours, _)| waiting(ours)).collect();
        for (watch, _) in &waits {
            watches.push(watch.clone());
        }
        assert!(watches.fire_all());
        assert!(watches.is_empty());
        for (watch, woken) in &waits {
            assert_eq!(woken.count(), 1);
            assert!(
                watch
                    .poll_ready(&Context::from_waker(Waker::noop()))
                    .is_ready()
            );
        }
        assert!(!watches.fire_all(), "fired an empty list");
    }
}
