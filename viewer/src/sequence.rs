//! RTP sequence numbers as a receiver sees them: gaps are losses, and a number at or behind the
//! newest seen (a duplicate, a reordered packet, a NACK retransmission) is late.

/// Counts gaps and reorderings in a stream of RTP sequence numbers.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    last: Option<u16>,
}

/// What one sequence number did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Newer than any before; `lost` packets are missing in between.
    Next { lost: u64 },
    /// A duplicate, or older than the newest seen.
    Late,
}

impl Sequence {
    pub(crate) fn see(&mut self, seq: u16) -> Seen {
        let Some(last) = self.last else {
            self.last = Some(seq);
            return Seen::Next { lost: 0 };
        };
        let delta = seq.wrapping_sub(last);
        if delta == 0 || delta >= 0x8000 {
            return Seen::Late;
        }
        self.last = Some(seq);
        Seen::Next {
            lost: u64::from(delta - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_losses_and_stragglers_are_late() {
        let mut s = Sequence::default();
        assert_eq!(s.see(65534), Seen::Next { lost: 0 });
        assert_eq!(s.see(65535), Seen::Next { lost: 0 });
        // Across the wrap, two missing (0 and 1).
        assert_eq!(s.see(2), Seen::Next { lost: 2 });
        assert_eq!(s.see(2), Seen::Late);
        assert_eq!(s.see(1), Seen::Late);
        assert_eq!(s.see(3), Seen::Next { lost: 0 });
    }
}
