//! The per-port `dev_id` allocator (spec §1.5).
//!
//! Ids are 1..=0xFFFD (0 is the master's). Allocation is round-robin: search
//! `[start, 0xFFFD]`, then `[1, start - 1]`; afterwards `start` becomes the id
//! handed out plus one, wrapping to 1 at 0xFFFE. So successive allocations return
//! 1, 2, 3, … even when earlier ids were freed, until the range wraps.

pub const DEV_ID_MIN: u16 = 1;
pub const DEV_ID_MAX: u16 = 0xFFFD;

const WORDS: usize = (DEV_ID_MAX as usize + 1).div_ceil(64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevIdAllocator {
    used: Box<[u64; WORDS]>,
    start: u16,
    live: usize,
}

impl Default for DevIdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl DevIdAllocator {
    pub fn new() -> Self {
        DevIdAllocator {
            used: Box::new([0; WORDS]),
            start: DEV_ID_MIN,
            live: 0,
        }
    }

    /// The next id, or `None` when all 65533 are in use (the kernel's `ENOSPC`).
    pub fn alloc(&mut self) -> Option<u16> {
        let id = self
            .first_free(self.start, DEV_ID_MAX)
            .or_else(|| self.first_free(DEV_ID_MIN, self.start - 1))?;
        self.used[usize::from(id) / 64] |= 1 << (id % 64);
        self.live += 1;
        self.start = if id + 1 > DEV_ID_MAX {
            DEV_ID_MIN
        } else {
            id + 1
        };
        Some(id)
    }

    /// Returns `id` to the pool; ids not in use are ignored.
    /// Marks a known id as used (a slave taken back after a restart); the next
    /// [`alloc`](Self::alloc) continues after the highest id claimed so far, as if
    /// the ids had been allocated in order. False if the id is out of range or taken.
    pub fn claim(&mut self, id: u16) -> bool {
        if !(DEV_ID_MIN..=DEV_ID_MAX).contains(&id) || self.is_used(id) {
            return false;
        }
        self.used[usize::from(id) / 64] |= 1 << (id % 64);
        self.live += 1;
        if id >= self.start {
            self.start = if id + 1 > DEV_ID_MAX {
                DEV_ID_MIN
            } else {
                id + 1
            };
        }
        true
    }

    pub fn free(&mut self, id: u16) {
        if self.is_used(id) {
            self.used[usize::from(id) / 64] &= !(1 << (id % 64));
            self.live -= 1;
        }
    }

    pub fn is_used(&self, id: u16) -> bool {
        (DEV_ID_MIN..=DEV_ID_MAX).contains(&id)
            && self.used[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    /// How many ids are allocated.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn first_free(&self, lo: u16, hi: u16) -> Option<u16> {
        let (mut i, hi) = (usize::from(lo), usize::from(hi));
        while i <= hi {
            let word = i / 64;
            let free = !self.used[word] >> (i % 64);
            if free != 0 {
                let candidate = i + free.trailing_zeros() as usize;
                return if candidate <= hi {
                    u16::try_from(candidate).ok()
                } else {
                    None
                };
            }
            i = (word + 1) * 64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_counts_up() {
        let mut a = DevIdAllocator::new();
        assert_eq!(a.alloc(), Some(1));
        assert_eq!(a.alloc(), Some(2));
        assert_eq!(a.alloc(), Some(3));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn freed_ids_are_not_reused_immediately() {
        let mut a = DevIdAllocator::new();
        assert_eq!(a.alloc(), Some(1));
        a.free(1);
        assert_eq!(a.alloc(), Some(2));
        a.free(2);
        assert_eq!(a.alloc(), Some(3));
        assert!(!a.is_used(1) && !a.is_used(2) && a.is_used(3));
    }

    #[test]
    fn wraps_after_the_top() {
        let mut a = DevIdAllocator::new();
        for want in DEV_ID_MIN..=DEV_ID_MAX {
            assert_eq!(a.alloc(), Some(want));
        }
        a.free(7);
        a.free(3);
        // start wrapped to 1: the lowest free id comes next.
        assert_eq!(a.alloc(), Some(3));
        assert_eq!(a.alloc(), Some(7));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn wrap_searches_from_start_first() {
        let mut a = DevIdAllocator::new();
        for _ in 0..10 {
            a.alloc();
        }
        for id in [2, 5, 9] {
            a.free(id);
        }
        // start is 11: the top range still has room.
        assert_eq!(a.alloc(), Some(11));
    }

    #[test]
    fn exhaustion_after_0xfffd() {
        let mut a = DevIdAllocator::new();
        for _ in 0..0xFFFD {
            assert!(a.alloc().is_some());
        }
        assert_eq!(a.len(), 0xFFFD);
        assert_eq!(a.alloc(), None);
        a.free(0x1234);
        assert_eq!(a.alloc(), Some(0x1234));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn free_ignores_unknown_ids() {
        let mut a = DevIdAllocator::new();
        a.free(0);
        a.free(5);
        a.free(0xFFFE);
        a.free(0xFFFF);
        assert!(a.is_empty());
        assert!(!a.is_used(0) && !a.is_used(0xFFFF));
    }

    #[test]
    fn claimed_ids_are_skipped_and_allocation_continues_after_them() {
        let mut a = DevIdAllocator::new();
        assert!(a.claim(3));
        assert!(!a.claim(3));
        assert!(!a.claim(0));
        assert_eq!(a.alloc(), Some(4));
        assert!(a.claim(1));
        assert_eq!(a.alloc(), Some(5));
        assert_eq!(a.len(), 4);
        a.free(3);
        assert_eq!(a.len(), 3);
    }
}
