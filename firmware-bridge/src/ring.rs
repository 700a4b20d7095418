//! The fixed-size ring of encoded, unacknowledged scan frames.
//!
//! Each slot holds one complete wire frame, encoded once when the scan is recorded, so a
//! retransmission sends exactly the bytes of the first transmission and the ring's memory
//! is fixed at build time: [`PENDING_LEN_MAX`] slots of [`FRAME_LEN_MAX`] bytes.

use heapless::{Deque, Vec};

/// Slots in the ring: scans kept while the agent has not acknowledged them.
pub const PENDING_LEN_MAX: usize = 64;

/// Largest encoded scan frame (header, payload and checksum), in bytes. Every field of a
/// scan is bounded (ids are at most 64 characters), so a valid scan needs about 450 bytes.
pub const FRAME_LEN_MAX: usize = 512;

/// One recorded scan, encoded.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) frame: Vec<u8, FRAME_LEN_MAX>,
}

/// Frames in sequence order, oldest first. Sequence numbers are consecutive.
#[derive(Debug)]
pub(crate) struct Ring {
    slots: Deque<Slot, PENDING_LEN_MAX>,
}

impl Ring {
    pub(crate) const fn new() -> Ring {
        Ring {
            slots: Deque::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends; the caller has made room first.
    pub(crate) fn push(&mut self, slot: Slot) {
        if let Some(last) = self.slots.back() {
            assert_eq!(
                last.seq + 1,
                slot.seq,
                "ring sequence numbers are consecutive"
            );
        }
        let pushed = self.slots.push_back(slot);
        assert!(pushed.is_ok(), "the caller makes room before pushing");
    }

    /// Removes the oldest frame.
    pub(crate) fn pop_oldest(&mut self) -> Option<Slot> {
        self.slots.pop_front()
    }

    /// Sequence number of the oldest frame.
    pub(crate) fn oldest_seq(&self) -> Option<u64> {
        self.slots.front().map(|s| s.seq)
    }

    /// The frame with sequence number `seq`, if held.
    pub(crate) fn get(&self, seq: u64) -> Option<&[u8]> {
        let oldest = self.oldest_seq()?;
        let index = usize::try_from(seq.checked_sub(oldest)?).ok()?;
        self.slots.iter().nth(index).map(|s| s.frame.as_slice())
    }

    /// Drops every frame through `seq`; returns how many.
    pub(crate) fn drop_through(&mut self, seq: u64) -> usize {
        let mut dropped = 0;
        while self.oldest_seq().is_some_and(|oldest| oldest <= seq) {
            self.slots.pop_front();
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64) -> Slot {
        let mut frame = Vec::new();
        frame.extend_from_slice(&seq.to_le_bytes()).unwrap();
        Slot { seq, frame }
    }

    #[test]
    fn drop_and_get() {
        let mut ring = Ring::new();
        for seq in 5..10 {
            ring.push(slot(seq));
        }
        assert_eq!(ring.get(7), Some(&7u64.to_le_bytes()[..]));
        assert_eq!(ring.get(4), None);
        assert_eq!(ring.get(10), None);
        assert_eq!(ring.drop_through(6), 2);
        assert_eq!(ring.oldest_seq(), Some(7));
        assert_eq!(ring.drop_through(3), 0);
        assert_eq!(ring.drop_through(100), 3);
        assert!(ring.is_empty());
    }
}
