//! Whether the chat adapter reaches its network now, for `/healthz` and
//! `/readyz`: set by the adapter as it syncs, read by the web entry point.

use std::sync::{Mutex, PoisonError};

/// The adapter's connection as it last found it.
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// As the adapter last said.
    now: LinkState,
    /// It was up at least once since start: start-up is done.
    ever_up: bool,
}

/// What `/healthz` reports of the chat adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LinkState {
    /// Connected.
    Up,
    /// Not connected yet since start.
    #[default]
    Starting,
    /// Not connected, with the adapter's reason.
    Down(String),
}

impl Link {
    /// The adapter reached its network (a sync came back).
    pub fn up(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.now = LinkState::Up;
        s.ever_up = true;
    }

    /// The adapter cannot reach its network, for `why`.
    pub fn down(&self, why: &str) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.now = LinkState::Down(crate::text::one_line(why));
    }

    /// How it is now.
    pub fn state(&self) -> LinkState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now
            .clone()
    }

    /// Whether it was connected at least once since start.
    pub fn started(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ever_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_starts_then_goes_down_with_its_reason_and_comes_back() {
        let link = Link::default();
        assert_eq!(link.state(), LinkState::Starting);
        assert!(!link.started());
        link.down("connection refused");
        assert_eq!(link.state(), LinkState::Down("connection refused".into()));
        assert!(!link.started());
        link.up();
        assert_eq!(link.state(), LinkState::Up);
        link.down("timed out\nagain");
        assert_eq!(link.state(), LinkState::Down("timed out\\nagain".into()));
        assert!(link.started());
        link.up();
        assert_eq!(link.state(), LinkState::Up);
    }
}
