//! [`Engine::http_finish`]: what the HTTP layer does once the response is known (recording
//! it, refunds and `cost_header` charges), and the response headers it reads.

use std::time::Duration;

use smallvec::SmallVec;

use super::{Exchange, header_cost};
use crate::Engine;
use crate::clock::Timestamp;
use crate::http::HeaderLookup;
use crate::monitor::{Event, ResponseEvent};
use crate::store::Adjustment;

impl Engine {
    /// The response headers [`http_finish`](Self::http_finish) reads (the rules'
    /// `cost_header`s), lower-cased.
    pub fn http_response_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in self.rules.iter() {
            if let Some(name) = &rule.response_counting().cost_header
                && !names.iter().any(|n| **n == **name)
            {
                names.push(name.to_string());
            }
        }
        names
    }

    /// Finishes an exchange once its response is: records the response (its status and the
    /// time since [`http`](Self::http) saw the request, under the normal path), gives back
    /// what rules that do not count this status took, and adds what a rule's `cost_header`
    /// says. `headers` are the response's (only the `cost_header`s are asked for).
    ///
    /// With a shared store this may write to it (one round trip): see
    /// [`Exchange::touches_shared_store`].
    pub fn http_finish(&self, exchange: Exchange, status: u16, headers: &dyn HeaderLookup) {
        self.http_finish_at(exchange, status, headers, self.clock.now());
    }

    /// [`http_finish`](Self::http_finish) at an explicit time.
    pub fn http_finish_at(
        &self,
        exchange: Exchange,
        status: u16,
        headers: &dyn HeaderLookup,
        now: Timestamp,
    ) {
        if exchange.records {
            let latency =
                Duration::from_micros(now.as_micros().saturating_sub(exchange.started.as_micros()));
            self.monitor.record(&Event::Response(ResponseEvent {
                at: now,
                method: exchange.method(),
                path: exchange.path(),
                status,
                latency,
            }));
        }
        if exchange.pending.is_empty() {
            return;
        }
        let mut ops = SmallVec::<[_; 4]>::new();
        for pending in &exchange.pending {
            let counting = self.rules[pending.rule as usize].response_counting();
            let layer = self.pending_layer(pending);
            if pending.cost > 0 && counting.refunds(status) {
                ops.push((
                    layer,
                    Adjustment::Refund {
                        cost: pending.cost,
                        at: pending.at,
                    },
                    pending.store,
                ));
            }
            if let Some(name) = &counting.cost_header
                && let Some(extra) = headers.header(name).and_then(header_cost)
                && extra > 0
            {
                ops.push((
                    layer,
                    Adjustment::Charge {
                        cost: extra,
                        at: now,
                    },
                    pending.store,
                ));
            }
        }
        self.adjust(&ops);
    }
}
