//! What a reload replaces: the rules and everything compiled from the configuration beside
//! them ([`Live`]), and the authenticator and access lists ([`Snapshot`]).
//!
//! A [`Decision`](crate::Decision) borrows its rules from the engine for as long as the
//! caller keeps it, so a reload cannot free the rules it replaces: every [`Live`] an engine
//! has had is kept until the engine is dropped ([`Generations`], a
//! [`Retained`]). A generation is the rules
//! and the `[http]` and `[headers]` sections compiled — a few kilobytes for a typical
//! configuration — and a reload that changes none of them makes none. In exchange, a
//! decision costs nothing more than before reloads existed: one atomic load of the current
//! generation, no reference count.
//!
//! The authenticator and the access lists are not borrowed by decisions: they are swapped
//! whole with the generation in one [`Snapshot`], which the HTTP layer loads once per request,
//! so a request sees one configuration from its first step to its last.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::common::retained::Retained;
use crate::config::HeadersConfig;
use crate::http::{CompiledAccess, HttpSettings};
use crate::limit::{KeyKind, Rule};

/// One generation of compiled configuration.
#[derive(Debug)]
pub(crate) struct Live {
    /// Unique among every engine's generations in the process: what a [`Permit`] or an
    /// exchange names its rules by.
    ///
    /// [`Permit`]: crate::Permit
    pub(crate) id: u64,
    pub(crate) rules: Box<[Rule]>,
    pub(crate) headers: HeadersConfig,
    /// Whether some rule looks at the path (its pattern or an endpoint key).
    pub(crate) parse_paths: bool,
    /// Whether some rule is keyed on the client address.
    pub(crate) keys_ip: bool,
    /// Whether some rule hears about the response (`count_responses`, `cost_header`).
    pub(crate) responses: bool,
    /// Whether some rule is decided before the token is verified.
    pub(crate) before_auth: bool,
    /// Whether some rule limits requests in progress (`concurrency`): its admissions hold a
    /// permit.
    pub(crate) holds: bool,
    /// Whether some rule is in shadow mode (its own `shadow` or `http.shadow`).
    pub(crate) shadows: bool,
    /// The `[http]` section, compiled.
    pub(crate) http: HttpSettings,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Live {
    pub(crate) fn new(rules: Vec<Rule>, headers: HeadersConfig, http: HttpSettings) -> Self {
        Live {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            parse_paths: rules
                .iter()
                .any(|r| r.matcher().has_paths() || *r.key() == KeyKind::Endpoint),
            keys_ip: rules.iter().any(|r| *r.key() == KeyKind::Ip),
            responses: rules.iter().any(|r| r.response_counting().needs_response()),
            before_auth: rules.iter().any(Rule::is_before_auth),
            holds: rules.iter().any(Rule::holds),
            shadows: rules.iter().any(Rule::is_shadow),
            rules: rules.into(),
            headers,
            http,
        }
    }
}

/// Every generation an engine has had; the newest is current.
pub(crate) type Generations = Retained<Live>;

impl Generations {
    /// The generation `id`, current or retired; `None` for another engine's.
    pub(crate) fn find_id(&self, id: u64) -> Option<&Live> {
        self.find(|l| l.id == id)
    }

    /// The generation whose rule table starts at `rules` (what a detached decision names).
    pub(crate) fn find_rules(&self, rules: usize) -> Option<&Live> {
        self.find(|l| l.rules.as_ptr() as usize == rules)
    }
}

/// What the HTTP layer reads of the configuration in one load: the generation, the
/// authenticator, the access lists.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The generation's id (see [`Generations::find_id`]).
    pub(crate) live: u64,
    pub(crate) auth: Option<Arc<Authenticator>>,
    pub(crate) access: Arc<CompiledAccess>,
}

/// The swappable [`Snapshot`].
pub(crate) type Snapshots = ArcSwap<Snapshot>;
