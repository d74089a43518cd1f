//! What a rule does once the response is known: which responses stay counted
//! ([`CountResponses`], [`StatusSet`]) and the [`ResponseCounting`] that holds them.

use std::fmt;

/// Which responses a rule keeps counted: the others are refunded once the response is known
/// (express-rate-limit's `skipSuccessfulRequests` and `skipFailedRequests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountResponses {
    /// Every request counts (the default).
    #[default]
    All,
    /// Only requests answered with a failed status count.
    Failed,
    /// Only requests answered with a status that is not a failure count.
    Successful,
    /// No request stays counted once answered: what a request holds is given back when its
    /// response ends (a `concurrency` rule's permits).
    #[serde(skip)]
    Released,
}

/// A set of HTTP statuses (100 to 999).
#[derive(Clone, PartialEq, Eq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    /// No status.
    pub const fn empty() -> Self {
        StatusSet([0; 16])
    }

    /// `from..=to` added.
    pub fn with_range(mut self, from: u16, to: u16) -> Self {
        for status in from..=to.min(1023) {
            self.0[usize::from(status / 64)] |= 1 << (status % 64);
        }
        self
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        status < 1024 && self.0[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }
}

impl Default for StatusSet {
    /// 400 to 599: every client and server error.
    fn default() -> Self {
        StatusSet::empty().with_range(400, 599)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut status = 0u16;
        while status < 1024 {
            if self.contains(status) {
                let start = status;
                while status + 1 < 1024 && self.contains(status + 1) {
                    status += 1;
                }
                list.entry(&format_args!("{start}-{status}"));
            }
            status += 1;
        }
        list.finish()
    }
}

/// What a rule does once the response is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseCounting {
    /// Which responses stay counted.
    pub count: CountResponses,
    /// The statuses that are failures.
    pub failed: StatusSet,
    /// A response header (lower-case name) whose integer value is added to the cost after the
    /// fact.
    pub cost_header: Option<Box<str>>,
}

impl ResponseCounting {
    /// Whether the rule needs to hear about the response at all.
    pub fn needs_response(&self) -> bool {
        self.count != CountResponses::All || self.cost_header.is_some()
    }

    /// Whether a request answered `status` is given back.
    pub fn refunds(&self, status: u16) -> bool {
        match self.count {
            CountResponses::All => false,
            CountResponses::Failed => !self.failed.contains(status),
            CountResponses::Successful => self.failed.contains(status),
            CountResponses::Released => true,
        }
    }
}
