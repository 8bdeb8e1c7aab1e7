//! A bounded FIFO of messages with the counters every sink reports. When
//! full, the newest message is refused and counted: what was queued first
//! keeps its place, so a collector that comes back sees the outage in order.

use crate::counters::{Counter, Counters};

use std::collections::VecDeque;

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Vec<u8>>,
    cap: usize,
    pub sent: u64,
    pub dropped: u64,
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            cap: cap.max(1),
            sent: 0,
            dropped: 0,
        }
    }

    /// Adds at the back; false (and counted) when full.
    pub fn push(&mut self, msg: Vec<u8>) -> bool {
        if self.items.len() >= self.cap {
            self.dropped += 1;
            return false;
        }
        self.items.push_back(msg);
        true
    }

    /// Puts a message that could not be sent back at the front. It was
    /// already counted in the queue, so this may exceed `cap` by one.
    pub fn requeue(&mut self, msg: Vec<u8>) {
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
        self.items.pop_front()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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
        let mut q = Queue::new(2);
        assert!(q.push(b"a".to_vec()));
        assert!(q.push(b"b".to_vec()));
        assert!(!q.push(b"c".to_vec()));
        assert_eq!(q.dropped, 1);
        let a = q.pop().unwrap();
        q.requeue(a);
        assert_eq!(q.pop().unwrap(), b"a");
        assert_eq!(q.pop().unwrap(), b"b");
        assert!(q.is_empty());
    }
}
