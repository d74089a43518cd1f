//! What the failover store answers when the shared store cannot decide: the fallback with its
//! share of each limit, or the `on_error` policy's answer.

use smallvec::SmallVec;

use super::{Inner, UNAVAILABLE_RETRY};
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::limit::{CountResponses, Outcome, Quota, Rule};
use crate::store::OnStoreError;
use crate::store::{Layer, Verdict};

/// What the failover store needs to know of the rules it decides, by rule state
/// ([`Rule::state`]).
#[derive(Debug, Clone, Default)]
pub struct FallbackRules {
    /// Per rule state, per policy: the quota the fallback decides with.
    pub(super) quotas: Vec<Vec<Quota>>,
    /// Per rule state: whether it gives back what some responses do not count (its denials
    /// are then not cached: a refund can make room before the wait is over).
    pub(super) refunds: Vec<bool>,
    /// Whether some fallback quota differs from its rule's (`fallback_share < 1`).
    pub(super) scaled: bool,
    /// Per rule state: how often it syncs, if it counts locally between syncs.
    pub(super) sync: Vec<Option<std::time::Duration>>,
    /// The share of each limit the fallback decides with.
    pub(super) share: f64,
}

impl FallbackRules {
    /// For `rules`, the fallback deciding with `share` of each limit (`0 < share <= 1`).
    pub fn new(rules: &[Rule], share: f64) -> Self {
        let states = rules
            .iter()
            .map(|r| r.state() as usize + 1)
            .max()
            .unwrap_or(0);
        let mut this = FallbackRules {
            quotas: vec![Vec::new(); states],
            refunds: vec![false; states],
            scaled: share < 1.0,
            sync: vec![None; states],
            share,
        };
        for rule in rules {
            let state = rule.state() as usize;
            this.quotas[state] = rule
                .policies()
                .iter()
                .map(|p| p.quota().shared_by(share))
                .collect();
            this.refunds[state] = rule.response_counting().count != CountResponses::All;
            this.sync[state] = rule.sync_interval();
        }
        this
    }
}

impl Inner {
    /// A decision while the shared store is unavailable, by the `on_error` policy.
    pub(super) fn decide_unavailable(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<Verdict, Error> {
        let verdict = |allowed, store| Ok(Verdict { allowed, store });
        match self.policy {
            OnStoreError::Fallback => {
                let allowed = if self.rules.current().scaled {
                    self.decide_scaled(layers, cost, now, outcomes)?
                } else {
                    self.local.acquire(layers, cost, now, outcomes)?
                };
                verdict(allowed, StoreUsed::Fallback)
            }
            OnStoreError::Allow => {
                for (outcome, layer) in outcomes.iter_mut().zip(layers) {
                    *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
                }
                verdict(true, StoreUsed::Unavailable)
            }
            OnStoreError::Deny => {
                let retry = u64::try_from(UNAVAILABLE_RETRY.as_micros()).unwrap_or(u64::MAX);
                for outcome in outcomes.iter_mut() {
                    *outcome = Outcome::new(false, 0, 0, retry);
                }
                verdict(false, StoreUsed::Unavailable)
            }
            OnStoreError::Error => Err(Error::new(
                ErrorKind::StoreUnavailable,
                match self.failure() {
                    Some(failure) => format!("the shared store is unavailable: {failure}"),
                    None => "the shared store is unavailable".to_owned(),
                },
            )),
        }
    }

    /// The fallback's decision with each layer's quota scaled by `fallback_share`.
    fn decide_scaled(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, Error> {
        let scaled: SmallVec<[Layer<'_>; 4]> =
            layers.iter().map(|l| self.fallback_layer(l)).collect();
        if let Some(over) = scaled
            .iter()
            .position(|l| !l.shadow && cost > l.quota.limit())
        {
            // It could never pass while degraded: denied, nothing consumed.
            for (outcome, layer) in outcomes.iter_mut().zip(&scaled) {
                *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
            }
            let period = u64::try_from(scaled[over].quota.period().as_micros()).unwrap_or(u64::MAX);
            outcomes[over] = Outcome::new(false, scaled[over].quota.limit(), period, period);
            return Ok(false);
        }
        self.local.acquire(&scaled, cost, now, outcomes)
    }

    /// `layer` as the fallback decides it: with its scaled quota.
    pub(super) fn fallback_layer<'a>(&'a self, layer: &Layer<'a>) -> Layer<'a> {
        let quota = self
            .rules
            .current()
            .quotas
            .get(layer.rule_state())
            .and_then(|q| q.get(layer.policy_index()))
            .unwrap_or(layer.quota);
        Layer { quota, ..*layer }
    }
}
