//! The console's tap on the decision path: every decision the server concludes (ext_authz,
//! the HTTP modes, the native API) is published here when the console is on. The last
//! denies and the last allows are kept in two bounded rings for the Recent decisions page,
//! and sent live to the pages watching it through a bounded broadcast channel: a watcher
//! that falls behind loses the oldest items, never slows a decision down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;

/// How many denies (and, separately, allows) the page shows on load.
pub const RECENT: usize = 100;
/// Items a watcher may lag behind before it skips ahead.
const CHANNEL: usize = 256;

/// One decision, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedItem {
    pub decision_id: String,
    pub time: String,
    pub api: &'static str,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub scope: Option<String>,
    pub data_action: bool,
    pub allowed: bool,
    pub shadow: bool,
    pub reason: &'static str,
    /// The role that granted, or the deny assignment that denied.
    pub detail: Option<String>,
}

/// The recent decisions and the live channel.
#[derive(Debug)]
pub struct DecisionFeed {
    tx: broadcast::Sender<Arc<FeedItem>>,
    recent: Mutex<Rings>,
}

#[derive(Debug, Default)]
struct Rings {
    denies: VecDeque<Arc<FeedItem>>,
    allows: VecDeque<Arc<FeedItem>>,
}

impl Default for DecisionFeed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            recent: Mutex::default(),
        }
    }
}

impl DecisionFeed {
    /// Keeps the item and sends it to every watcher (none is fine).
    pub fn publish(&self, item: FeedItem) {
        let item = Arc::new(item);
        {
            let mut rings = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let ring = if item.allowed {
                &mut rings.allows
            } else {
                &mut rings.denies
            };
            if ring.len() == RECENT {
                ring.pop_back();
            }
            ring.push_front(item.clone());
        }
        let _ = self.tx.send(item);
    }

    /// The kept denies and allows, newest first.
    pub fn recent(&self) -> (Vec<Arc<FeedItem>>, Vec<Arc<FeedItem>>) {
        let rings = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        (
            rings.denies.iter().cloned().collect(),
            rings.allows.iter().cloned().collect(),
        )
    }

    /// A kept decision by id.
    pub fn find(&self, decision_id: &str) -> Option<Arc<FeedItem>> {
        let rings = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        rings
            .denies
            .iter()
            .chain(rings.allows.iter())
            .find(|i| i.decision_id == decision_id)
            .cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: usize, allowed: bool) -> FeedItem {
        FeedItem {
            decision_id: format!("d{id}"),
            time: String::new(),
            api: "check",
            principal: None,
            action: None,
            scope: None,
            data_action: false,
            allowed,
            shadow: false,
            reason: if allowed { "roleAssignment" } else { "noGrant" },
            detail: None,
        }
    }

    #[test]
    fn rings_are_bounded_newest_first_and_apart() {
        let feed = DecisionFeed::default();
        let mut rx = feed.subscribe();
        for i in 0..RECENT + 5 {
            feed.publish(item(i, false));
        }
        feed.publish(item(999, true));
        let (denies, allows) = feed.recent();
        assert_eq!(denies.len(), RECENT);
        assert_eq!(denies[0].decision_id, format!("d{}", RECENT + 4));
        assert_eq!(allows.len(), 1);
        assert!(feed.find("d4").is_none());
        assert!(feed.find("d999").is_some());
        assert_eq!(
            rx.try_recv().map(|i| i.decision_id.clone()).ok().as_deref(),
            Some("d0")
        );
    }
}
