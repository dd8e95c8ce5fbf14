//! The hand-off between a call's response sinks and its stream driver: one item at a time, so
//! [`ResponseSink::send`](super::ResponseSink::send) is flow-controlled, with senders that
//! wait served in the order they came.
//!
//! Why not a channel: the handler usually runs inside the driver's own poll, and a channel
//! wakes the driver for every item pushed there, which costs a second poll of the whole call
//! (h2's stream lock taken three more times) for each response message. Here an item pushed
//! while the driver is polling the handler does not wake it: the driver looks at the slot as
//! soon as the handler returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::handler::SinkItem;

/// One call's slot: sinks push into it, the driver takes from it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    inner: Mutex<Inner>,
    /// The driver is inside its poll of the handler and takes from the slot right after, so a
    /// push need not wake it.
    driver_polling: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    item: Option<SinkItem>,
    closed: bool,
    /// The driver's waker, set when it found the slot empty.
    driver: Option<Waker>,
    /// Senders waiting for the slot, first come first served.
    waiting: VecDeque<(u64, Waker)>,
    /// The waiting sender woken for the free slot, until it fills it (or is dropped).
    notified: Option<u64>,
    next_id: u64,
}

impl Inner {
    /// Wakes the first waiting sender for a free slot, unless one is already on its way.
    fn notify_next(&mut self) {
        if self.notified.is_some() {
            return;
        }
        if let Some((id, waker)) = self.waiting.pop_front() {
            self.notified = Some(id);
            waker.wake();
        }
    }
}

/// The slot was closed: the call ended or was cancelled.
#[derive(Debug)]
pub(crate) struct Closed;

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `item` in the slot, waiting (in turn) while it is full. Fails once closed.
    pub(crate) fn push(&self, item: SinkItem) -> Push<'_> {
        Push {
            slot: self,
            item: Some(item),
            id: None,
        }
    }

    /// Takes the item waiting in the slot; `None` (with the driver's waker kept for the next
    /// push) when there is none.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Option<SinkItem> {
        let mut inner = self.lock();
        match inner.item.take() {
            Some(item) => {
                inner.notify_next();
                Some(item)
            }
            None => {
                match &mut inner.driver {
                    Some(waker) => waker.clone_from(cx.waker()),
                    None => inner.driver = Some(cx.waker().clone()),
                }
                None
            }
        }
    }

    /// Marks the driver as inside (`true`) or out of (`false`) its poll of the handler.
    pub(crate) fn set_driver_polling(&self, polling: bool) {
        self.driver_polling.store(polling, Ordering::SeqCst);
    }

    /// Closes the slot: the item in it is dropped, waiting and later pushes fail.
    pub(crate) fn close(&self) {
        let (item, waiting) = {
            let mut inner = self.lock();
            inner.closed = true;
            inner.driver = None;
            (inner.item.take(), std::mem::take(&mut inner.waiting))
        };
        drop(item);
        for (_, waker) in waiting {
            waker.wake();
        }
    }
}

/// The future of [`Slot::push`].
#[derive(Debug)]
pub(crate) struct Push<'a> {
    slot: &'a Slot,
    item: Option<SinkItem>,
    /// Our place among the waiting senders, once we wait.
    id: Option<u64>,
}

impl Future for Push<'_> {
    type Output = Result<(), Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(item) = this.item.take() else {
            return Poll::Ready(Ok(()));
        };
        let mut inner = this.slot.lock();
        if inner.closed {
            this.id = None;
            return Poll::Ready(Err(Closed));
        }
        let my_turn = match this.id {
            // A newcomer goes first only if nobody is waiting.
            None => inner.waiting.is_empty() && inner.notified.is_none(),
            Some(id) => inner.notified == Some(id),
        };
        if my_turn && inner.item.is_none() {
            inner.item = Some(item);
            if this.id.take().is_some() {
                inner.notified = None;
                // Whoever waits next is woken when the driver takes this item.
            }
            if !this.slot.driver_polling.load(Ordering::SeqCst) {
                if let Some(driver) = &inner.driver {
                    driver.wake_by_ref();
                }
            }
            return Poll::Ready(Ok(()));
        }
        this.item = Some(item);
        match this.id {
            Some(id) if inner.notified == Some(id) => {
                // Woken for a slot that is full again: wait at the front.
                inner.notified = None;
                inner.waiting.push_front((id, cx.waker().clone()));
            }
            Some(id) => match inner.waiting.iter_mut().find(|(i, _)| *i == id) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => inner.waiting.push_back((id, cx.waker().clone())),
            },
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                this.id = Some(id);
                inner.waiting.push_back((id, cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for Push<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        let mut inner = self.slot.lock();
        inner.waiting.retain(|(i, _)| *i != id);
        if inner.notified == Some(id) {
            // Woken for the free slot and gone without filling it: pass the turn on.
            inner.notified = None;
            if inner.item.is_none() {
                inner.notify_next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Metadata;
    use crate::test_util::WakeCounter;
    use std::sync::Arc;

    /// Polls `future` once with `waker`.
    fn poll_with<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(waker))
    }

    fn item(n: usize) -> SinkItem {
        let mut md = Metadata::new();
        md.append("n", n.to_string().as_str()).unwrap();
        SinkItem::Headers(md)
    }

    fn number(item: SinkItem) -> usize {
        match item {
            SinkItem::Headers(md) => md.get("n").unwrap().parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn waiting_senders_go_in_order_and_a_push_inside_the_driver_poll_does_not_wake_it() {
        let slot = Slot::default();
        let driver = Arc::new(WakeCounter::default());
        let driver_waker = Waker::from(driver.clone());
        let mut dcx = Context::from_waker(&driver_waker);
        assert!(slot.poll_take(&mut dcx).is_none());

        // The handler pushes while the driver polls it: no wake-up.
        slot.set_driver_polling(true);
        let mut first = std::pin::pin!(slot.push(item(0)));
        let w0 = Arc::new(WakeCounter::default());
        let waker0 = Waker::from(w0.clone());
        assert!(poll_with(first.as_mut(), &waker0).is_ready());
        slot.set_driver_polling(false);
        assert_eq!(driver.count(), 0);

        // Three more senders queue behind the full slot.
        let counters: Vec<_> = (0..3).map(|_| Arc::new(WakeCounter::default())).collect();
        let wakers: Vec<_> = counters.iter().map(|c| Waker::from(c.clone())).collect();
        let mut pushes: Vec<_> = (1..4).map(|n| Box::pin(slot.push(item(n)))).collect();
        for (push, waker) in pushes.iter_mut().zip(&wakers) {
            assert!(poll_with(push.as_mut(), waker).is_pending());
        }
        // A newcomer behind them must wait too, even when the slot frees.
        assert_eq!(number(slot.poll_take(&mut dcx).unwrap()), 0);
        assert_eq!(counters[0].count(), 1, "the first waiter is woken");
        assert_eq!(counters[1].count(), 0);
        let late = Arc::new(WakeCounter::default());
        let late_waker = Waker::from(late.clone());
        let mut newcomer = Box::pin(slot.push(item(9)));
        assert!(poll_with(newcomer.as_mut(), &late_waker).is_pending());

        // Sender 1 drops without taking its turn: sender 2 gets it.
        drop(pushes.remove(0));
        assert_eq!(counters[1].count(), 1);
        assert!(poll_with(pushes[0].as_mut(), &wakers[1]).is_ready());
        assert_eq!(
            driver.count(),
            1,
            "a push outside the driver's poll wakes it"
        );
        assert_eq!(number(slot.poll_take(&mut dcx).unwrap()), 2);
        assert!(poll_with(pushes[1].as_mut(), &wakers[2]).is_ready());
        assert_eq!(number(slot.poll_take(&mut dcx).unwrap()), 3);
        assert!(poll_with(newcomer.as_mut(), &late_waker).is_ready());
        assert_eq!(number(slot.poll_take(&mut dcx).unwrap()), 9);
        assert!(slot.poll_take(&mut dcx).is_none());
    }

    #[test]
    fn closing_fails_waiting_and_later_pushes() {
        let slot = Slot::default();
        let waker = Waker::from(Arc::new(WakeCounter::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(std::pin::pin!(slot.push(item(0))).poll(&mut cx).is_ready());
        let waiter = Arc::new(WakeCounter::default());
        let waiter_waker = Waker::from(waiter.clone());
        let mut waiting = Box::pin(slot.push(item(1)));
        assert!(poll_with(waiting.as_mut(), &waiter_waker).is_pending());
        slot.close();
        assert_eq!(waiter.count(), 1);
        assert!(matches!(
            waiting.as_mut().poll(&mut cx),
            Poll::Ready(Err(Closed))
        ));
        assert!(matches!(
            std::pin::pin!(slot.push(item(2))).poll(&mut cx),
            Poll::Ready(Err(Closed))
        ));
        assert!(slot.poll_take(&mut cx).is_none());
    }
}
