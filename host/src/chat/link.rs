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
    /// Connected now.
    up: bool,
    /// It was up at least once since start: start-up is done.
    ever_up: bool,
    /// Why it is down, in the adapter's words.
    down_because: Option<String>,
}

/// What `/healthz` reports of the chat adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connected.
    Up,
    /// Not connected yet since start.
    Starting,
    /// Lost after it was up, with the adapter's reason.
    Down(String),
}

impl Link {
    /// The adapter reached its network (a sync came back).
    pub fn up(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.up = true;
        s.ever_up = true;
        s.down_because = None;
    }

    /// The adapter cannot reach its network, for `why`.
    pub fn down(&self, why: &str) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.up = false;
        s.down_because = Some(crate::text::one_line(why));
    }

    /// How it is now.
    pub fn state(&self) -> LinkState {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (s.up, s.ever_up, &s.down_because) {
            (true, _, _) => LinkState::Up,
            (false, _, Some(why)) => LinkState::Down(why.clone()),
            (false, false, None) => LinkState::Starting,
            (false, true, None) => LinkState::Down("disconnected".into()),
        }
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
