//! A FIFO of messages bounded in bytes, with the counters every sink
//! reports. When full, the newest message is refused and counted: what was
//! queued first keeps its place, so a collector that comes back sees the
//! outage in order.
//!
//! The bound is on bytes because a message's size is not: one JSON line
//! carries up to `max_args_bytes` of argv twice (`process.args` and
//! `command_line`), and `\u` escapes can multiply that by six, so a count
//! of messages bounds nothing. A message count is kept as a second bound
//! where the config names one (`output.syslog.queue`).

use crate::counters::{Counter, Counters};

use std::collections::VecDeque;

/// What one queued message costs beyond its bytes (the `Vec` and its
/// allocation), so many tiny messages are bounded too.
const PER_MESSAGE: usize = 64;

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Vec<u8>>,
    max_msgs: usize,
    max_bytes: usize,
    /// Sum of `cost` over `items`.
    bytes: usize,
    pub sent: u64,
    pub dropped: u64,
}

fn cost(msg: &[u8]) -> usize {
    msg.len().saturating_add(PER_MESSAGE)
}

impl Queue {
    /// At most `max_msgs` messages and `max_bytes` bytes (both at least one
    /// message: an empty queue takes any message up to `max_bytes`).
    pub fn new(max_msgs: usize, max_bytes: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            max_msgs: max_msgs.max(1),
            max_bytes: max_bytes.max(PER_MESSAGE + 1),
            bytes: 0,
            sent: 0,
            dropped: 0,
        }
    }

    /// Adds at the back; false (and counted) when it does not fit.
    pub fn push(&mut self, msg: Vec<u8>) -> bool {
        let c = cost(&msg);
        if self.items.len() >= self.max_msgs || self.bytes.saturating_add(c) > self.max_bytes {
            self.dropped += 1;
            return false;
        }
        self.bytes += c;
        self.items.push_back(msg);
        true
    }

    /// Puts a message that could not be sent back at the front. It was
    /// already counted in the queue, so this may exceed the bounds by one
    /// message.
    pub fn requeue(&mut self, msg: Vec<u8>) {
        self.bytes += cost(&msg);
        self.items.push_front(msg);
    }

    pub fn front(&self) -> Option<&Vec<u8>> {
        self.items.front()
    }

    /// The queued messages, oldest first (for one vectored write).
    pub fn iter(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.items.iter()
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let m = self.items.pop_front()?;
        self.bytes -= cost(&m);
        Some(m)
    }

    /// Empties the queue, counting every message as dropped (a reader
    /// that is gone for good).
    pub fn drop_all(&mut self) {
        self.dropped += self.items.len() as u64;
        self.items.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held, with the per-message overhead.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `names`: the sink's `sent`, `dropped` and `queued` counters.
    pub fn counters(&self, names: [Counter; 3], out: &mut Counters) {
        out.set(names[0], self.sent);
        out.set(names[1], self.dropped);
        out.set(names[2], self.items.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_keeps_oldest_and_counts() {
        let mut q = Queue::new(2, 1 << 20);
        assert!(q.push(b"a".to_vec()));
        assert!(q.push(b"b".to_vec()));
        assert!(!q.push(b"c".to_vec()));
        assert_eq!(q.dropped, 1);
        let a = q.pop().unwrap();
        q.requeue(a);
        assert_eq!(q.pop().unwrap(), b"a");
        assert_eq!(q.pop().unwrap(), b"b");
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn bounded_by_bytes_whatever_the_count() {
        let big = vec![b'x'; 1 << 20];
        let mut q = Queue::new(usize::MAX, 3 << 20);
        assert!(q.push(big.clone()));
        assert!(q.push(big.clone()));
        // A third would pass 3 MiB with the per-message overhead.
        assert!(!q.push(big.clone()));
        assert_eq!((q.len(), q.dropped), (2, 1));
        assert!(q.bytes() <= 3 << 20);
        // Small messages still fit in what is left, and are bounded too.
        let mut n = 0;
        while q.push(b"small".to_vec()) {
            n += 1;
        }
        assert!(n > 0 && q.bytes() <= 3 << 20, "{n} {}", q.bytes());
        assert_eq!(q.dropped, 2);
        q.drop_all();
        assert_eq!((q.len(), q.bytes(), q.dropped), (0, 0, 2 + 2 + n));
    }

    #[test]
    fn a_message_larger_than_the_bound_is_refused_and_counted() {
        let mut q = Queue::new(10, 1000);
        assert!(!q.push(vec![0; 1000]));
        assert_eq!((q.len(), q.dropped), (0, 1));
        assert!(q.push(vec![0; 1000 - PER_MESSAGE]));
    }

    #[test]
    fn bytes_follow_pop_and_requeue() {
        let mut q = Queue::new(10, 10_000);
        q.push(vec![1; 100]);
        q.push(vec![2; 200]);
        assert_eq!(q.bytes(), 300 + 2 * PER_MESSAGE);
        let m = q.pop().unwrap();
        assert_eq!(q.bytes(), 200 + PER_MESSAGE);
        q.requeue(m);
        assert_eq!(q.bytes(), 300 + 2 * PER_MESSAGE);
    }
}
