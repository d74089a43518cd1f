//! The Redis store on its own, as a [`Store`]: what an engine would get without the failover
//! policy around it.

use super::{RedisStore, StoreFailure};
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::limit::Outcome;
use crate::store::{Adjustment, Ask, Layer, Store, StoreHealth, Verdict};

/// The Redis store on its own: every failure is the call's error (`store_unavailable`). An
/// engine puts it behind a [`FailoverStore`](crate::store::FailoverStore), which decides what a
/// failure means instead.
impl Store for RedisStore {
    fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<Verdict, Error> {
        let allowed = RedisStore::decide(self, layers, cost, now, outcomes, times)
            .map_err(|f| unavailable(f.failure))?;
        Ok(Verdict {
            allowed,
            store: StoreUsed::Redis,
        })
    }

    fn decide_many(
        &self,
        asks: &[Ask<'_>],
        outcomes: &mut [&mut [Outcome]],
    ) -> Vec<Result<Verdict, Error>> {
        let batch: Vec<(&[Layer<'_>], u64, Timestamp)> =
            asks.iter().map(|a| (a.layers, a.cost, a.now)).collect();
        let queued = asks.iter().filter_map(|a| a.queued).min();
        RedisStore::decide_many(self, &batch, outcomes, queued)
            .into_iter()
            .map(|verdict| match verdict {
                Ok(allowed) => Ok(Verdict {
                    allowed,
                    store: StoreUsed::Redis,
                }),
                Err(f) => Err(unavailable(f.failure)),
            })
            .collect()
    }

    fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        let remote: Vec<(Layer<'_>, Adjustment)> = ops
            .iter()
            .filter(|(_, _, store)| *store == StoreUsed::Redis)
            .map(|&(layer, adjustment, _)| (layer, adjustment))
            .collect();
        let _ = RedisStore::adjust(self, &remote);
    }

    fn administer(
        &self,
        layer: &Layer<'_>,
        op: crate::store::KeyOp,
        now: Timestamp,
    ) -> Result<(), Error> {
        RedisStore::administer(self, layer, op, now).map_err(|f| unavailable(f.failure))
    }

    fn key_limit(
        &self,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Result<Option<(u64, std::time::Duration)>, Error> {
        RedisStore::key_limit(self, layer, now).map_err(|f| unavailable(f.failure))
    }

    fn used(&self) -> StoreUsed {
        StoreUsed::Redis
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::ok(self.since)
    }

    fn purge_expired(&self, _now: Timestamp) -> usize {
        // Every key carries a TTL: Redis expires them itself.
        0
    }

    fn key_count(&self) -> usize {
        0
    }

    fn reload(&self, _rules: &[crate::limit::Rule], _forget: &[u32]) {
        // Nothing is held here: a restarted rule's keys are named anew.
    }
}

/// A failure as the error of a call.
fn unavailable(failure: StoreFailure) -> Error {
    Error::new(
        ErrorKind::StoreUnavailable,
        format!("the shared store is unavailable: {failure}"),
    )
}
